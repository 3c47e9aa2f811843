// Shows the on-screen keyboard when it helps: in "auto" while the question box has the focus and the visitor
// uses touch (or, before any input, the screen's pointer is coarse); a key pressed on a real keyboard hides it
// until the next touch. "always" shows it all the time, "off" never.
// It stays while the focus moves within the composer (the send button), so a tap there does not move the
// layout under the finger; it goes when the focus leaves the composer.
import { computed, onBeforeUnmount, onMounted, ref, type Ref } from 'vue'
import { keyboardVisible, queryMode, type KeyboardMode } from './mode'

function coarsePointer(): boolean {
  return typeof matchMedia === 'function' && matchMedia('(pointer: coarse)').matches
}

type El = Ref<HTMLElement | null>

const within = (el: HTMLElement | null, target: EventTarget | null) => !!el && target instanceof Node && el.contains(target)

/** `field`: the question box; `keys`: the keyboard; `area`: the composer that holds both. */
export function useKeyboardVisibility(mode: () => KeyboardMode, field: El, keys: El, area: El) {
  const override = queryMode()
  const focused = ref(false)
  const touch = ref(coarsePointer())
  const physicalKey = ref(false)
  const dismissed = ref(false)

  const visible = computed(() =>
    keyboardVisible({ mode: override ?? mode(), focused: focused.value, touch: touch.value,
      physicalKey: physicalKey.value, dismissed: dismissed.value }))

  /** A touch anywhere means touch input; a mouse only counts where it chooses the question box. */
  function onPointerDown(event: PointerEvent): void {
    const onField = within(field.value, event.target)
    if (onField) dismissed.value = false
    if (event.pointerType === 'touch' || event.pointerType === 'pen') {
      touch.value = true
      physicalKey.value = false
    } else if (onField) touch.value = false
  }

  function onKeyDown(event: KeyboardEvent): void {
    if (event.isTrusted && !within(keys.value, event.target)) physicalKey.value = true
  }

  const onFocusIn = () => (focused.value = true)
  const onFocusOut = (event: FocusEvent) => {
    if (!within(area.value, event.relatedTarget)) focused.value = false
  }

  onMounted(() => {
    document.addEventListener('pointerdown', onPointerDown, true)
    document.addEventListener('keydown', onKeyDown, true)
    field.value?.addEventListener('focusin', onFocusIn)
    area.value?.addEventListener('focusout', onFocusOut) // from the box or a button of the composer
    focused.value = !!field.value && document.activeElement === field.value
  })
  onBeforeUnmount(() => {
    document.removeEventListener('pointerdown', onPointerDown, true)
    document.removeEventListener('keydown', onKeyDown, true)
  })

  return { visible, dismiss: () => (dismissed.value = true) }
}
