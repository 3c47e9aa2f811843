import { onBeforeUnmount, ref } from 'vue'

/** Whether a media query matches, kept up to date (e.g. the wide layout on a 1920 px display). */
export function useMediaQuery(query: string) {
  const mql = typeof window.matchMedia === 'function' ? window.matchMedia(query) : null
  const matches = ref(mql?.matches ?? false)
  const update = (event: MediaQueryListEvent) => (matches.value = event.matches)
  mql?.addEventListener('change', update)
  onBeforeUnmount(() => mql?.removeEventListener('change', update))
  return matches
}
