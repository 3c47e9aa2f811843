// A public touch screen is not a web page to be zoomed, dragged or long-pressed: no context menu, no pinch
// or ctrl+wheel zoom, no dragging text or images off. The question box keeps its own editing menu (paste,
// select), so long press works there. CSS does the rest (touch-action, user-select, overscroll-behavior).

/** Whether the event happened inside an editable field (the question box), where editing menus stay. */
export function inEditable(target: EventTarget | null): boolean {
  if (!(target instanceof Element)) return false
  return target.closest('textarea, input, [contenteditable="true"]') !== null
}

function blockOutsideEditable(event: Event): void {
  if (!inEditable(event.target)) event.preventDefault()
}

function blockZoomWheel(event: WheelEvent): void {
  if (event.ctrlKey) event.preventDefault()
}

function blockMultiTouch(event: TouchEvent): void {
  if (event.touches.length > 1) event.preventDefault() // a second finger: a pinch, never a tap
}

/** Installs the guards on `doc`; returns the function that removes them. */
export function installTouchGuard(doc: Document = document): () => void {
  const passiveOff = { passive: false } as const
  doc.addEventListener('contextmenu', blockOutsideEditable)
  doc.addEventListener('selectstart', blockOutsideEditable)
  doc.addEventListener('dragstart', blockOutsideEditable)
  doc.addEventListener('wheel', blockZoomWheel, passiveOff)
  doc.addEventListener('touchmove', blockMultiTouch, passiveOff)
  return () => {
    doc.removeEventListener('contextmenu', blockOutsideEditable)
    doc.removeEventListener('selectstart', blockOutsideEditable)
    doc.removeEventListener('dragstart', blockOutsideEditable)
    doc.removeEventListener('wheel', blockZoomWheel)
    doc.removeEventListener('touchmove', blockMultiTouch)
  }
}
