// The larger-text toggle. It lasts for the visit: kept in sessionStorage under the visit's token (so a reload
// during the visit keeps it), and off again for the next visitor, whose token differs.
import { ref, watch } from 'vue'
import type { ChatState } from './chat/types'

const STORAGE_KEY = 'kiosk.largeText'
export const LARGE_TEXT_CLASS = 'large-text'

function stored(): string | null {
  try {
    return window.sessionStorage.getItem(STORAGE_KEY)
  } catch {
    return null // storage may be disabled in a locked-down kiosk browser
  }
}

function store(visit: string | null): void {
  try {
    if (visit === null) window.sessionStorage.removeItem(STORAGE_KEY)
    else window.sessionStorage.setItem(STORAGE_KEY, visit)
  } catch {
    // not kept over a reload; still on for this page
  }
}

export function useLargeText(state: ChatState) {
  const on = ref(false)

  watch(on, (value) => document.documentElement.classList.toggle(LARGE_TEXT_CLASS, value), { immediate: true })
  watch(() => state.visit, (visit) => {
    if (visit !== null) on.value = stored() === visit
  })
  watch(() => state.visitCount, () => {
    on.value = false
    store(null)
  })

  function toggle(): void {
    on.value = !on.value
    store(on.value ? state.visit : null)
  }

  return { on, toggle }
}
