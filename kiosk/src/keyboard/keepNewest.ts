// When the composer grows (the keyboard opens, the candidates bar appears), the conversation above it
// shrinks: keep its newest text in view if it was in view before.
import { onBeforeUnmount, onMounted, type Ref } from 'vue'

const NEAR_BOTTOM_PX = 48
const SCROLLER = '.conversation-scroll'

export function useKeepNewestVisible(grower: Ref<HTMLElement | null>): void {
  let observer: ResizeObserver | null = null
  let lastHeight = 0

  function onResize(): void {
    const height = grower.value?.offsetHeight ?? 0
    const delta = height - lastHeight
    lastHeight = height
    const scroller = document.querySelector<HTMLElement>(SCROLLER)
    if (delta <= 0 || !scroller) return
    const distance = scroller.scrollHeight - scroller.clientHeight - scroller.scrollTop
    if (distance <= delta + NEAR_BOTTOM_PX) scroller.scrollTop = scroller.scrollHeight
  }

  onMounted(() => {
    lastHeight = grower.value?.offsetHeight ?? 0
    if (typeof ResizeObserver === 'function' && grower.value) {
      observer = new ResizeObserver(onResize)
      observer.observe(grower.value)
    }
  })
  onBeforeUnmount(() => observer?.disconnect())
}
