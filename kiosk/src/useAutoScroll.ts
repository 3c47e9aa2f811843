// Keeps the newest text in view while it streams, unless the visitor has scrolled up to read: then the view
// stays put and a "jump to newest" button appears.
import { onBeforeUnmount, onMounted, ref, type Ref } from 'vue'

// Within this distance of the bottom counts as "at the newest text".
const NEAR_BOTTOM_PX = 48

export function useAutoScroll(scroller: Ref<HTMLElement | null>, content: Ref<HTMLElement | null>) {
  const pinned = ref(true)
  let lastTop = 0
  let touching = false
  let observer: ResizeObserver | null = null

  function distanceFromBottom(el: HTMLElement): number {
    return el.scrollHeight - el.clientHeight - el.scrollTop
  }

  function scrollToBottom(): void {
    const el = scroller.value
    if (!el) return
    el.scrollTop = el.scrollHeight
    lastTop = el.scrollTop
  }

  /** Content changed size: follow it if the visitor is not reading further up. */
  function follow(): void {
    if (pinned.value && !touching) scrollToBottom()
  }

  function onScroll(): void {
    const el = scroller.value
    if (!el) return
    const top = el.scrollTop
    // Growing content does not move scrollTop; only the visitor scrolling up does. So a move upwards away
    // from the bottom unpins, and coming back near the bottom pins again.
    if (distanceFromBottom(el) <= NEAR_BOTTOM_PX) pinned.value = true
    else if (top < lastTop - 1) pinned.value = false
    lastTop = top
  }

  function jumpToNewest(): void {
    pinned.value = true
    scrollToBottom()
  }

  const onTouchStart = () => (touching = true)
  const onTouchEnd = () => {
    touching = false
    onScroll()
  }

  onMounted(() => {
    const el = scroller.value
    if (!el) return
    el.addEventListener('scroll', onScroll, { passive: true })
    el.addEventListener('touchstart', onTouchStart, { passive: true })
    el.addEventListener('touchend', onTouchEnd, { passive: true })
    el.addEventListener('touchcancel', onTouchEnd, { passive: true })
    if (typeof ResizeObserver === 'function' && content.value) {
      observer = new ResizeObserver(follow)
      observer.observe(content.value)
    }
    scrollToBottom()
  })

  onBeforeUnmount(() => observer?.disconnect())

  return { pinned, follow, jumpToNewest }
}
