// Editing the question box's text at its caret, for the on-screen keyboard.

export interface Edit {
  text: string
  caret: number
}

/** `piece` in place of text[start, end), cut to what still fits in `max` characters. */
export function insertAt(text: string, piece: string, start: number, end: number, max: number): Edit {
  const [from, to] = start <= end ? [start, end] : [end, start]
  const room = Math.max(0, max - (text.length - (to - from)))
  const fitted = Array.from(piece).reduce((kept, ch) => (kept.length + ch.length <= room ? kept + ch : kept), '')
  return { text: text.slice(0, from) + fitted + text.slice(to), caret: from + fitted.length }
}

/** Backspace: removes the selection, else the character (a whole surrogate pair) before the caret. */
export function deleteBefore(text: string, start: number, end: number): Edit {
  if (start !== end) {
    const [from, to] = start < end ? [start, end] : [end, start]
    return { text: text.slice(0, from) + text.slice(to), caret: from }
  }
  if (start <= 0) return { text, caret: 0 }
  const low = text.charCodeAt(start - 1)
  const width = low >= 0xdc00 && low <= 0xdfff && start >= 2 ? 2 : 1
  return { text: text.slice(0, start - width) + text.slice(start), caret: start - width }
}
