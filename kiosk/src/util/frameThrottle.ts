// Coalesces many calls into at most one per animation frame (tokens can arrive far faster than 60/s).

type FrameRequest = (callback: () => void) => unknown

const requestFrame: FrameRequest =
  typeof requestAnimationFrame === 'function'
    ? (cb) => requestAnimationFrame(() => cb())
    : (cb) => setTimeout(cb, 16)

export interface FrameThrottle {
  schedule: () => void
  /** Runs a pending call now (e.g. when the answer ends, so the last text shows without waiting). */
  flush: () => void
  cancel: () => void
}

export function frameThrottle(fn: () => void, request: FrameRequest = requestFrame): FrameThrottle {
  let pending = false
  let generation = 0
  return {
    schedule() {
      if (pending) return
      pending = true
      const mine = ++generation
      request(() => {
        if (!pending || mine !== generation) return
        pending = false
        fn()
      })
    },
    flush() {
      if (!pending) return
      pending = false
      generation++
      fn()
    },
    cancel() {
      pending = false
      generation++
    },
  }
}
