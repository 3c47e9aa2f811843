// Whether the model is loaded: from the hello frame, else (model still loading, or an older daemon that
// sends no hello) by polling /readyz once a second.
import { onBeforeUnmount } from 'vue'
import type { ChatState } from './chat/types'
import { pollUntilReady, type ReadinessPoll } from './net/readiness'

// How long to wait for a hello after the socket opens before asking /readyz instead.
const HELLO_GRACE_MS = 2000

export function useReadiness(state: ChatState) {
  let poll: ReadinessPoll | null = null
  let helloTimer: ReturnType<typeof setTimeout> | null = null

  /** Starts polling if the model is known to be loading (and no poll runs yet). */
  function check(): void {
    if (state.ready !== false || poll !== null) return
    poll = pollUntilReady(() => {
      poll = null
      if (state.connected) state.ready = true
    })
  }

  function stop(): void {
    poll?.stop()
    poll = null
    if (helloTimer !== null) clearTimeout(helloTimer)
    helloTimer = null
  }

  function opened(): void {
    helloTimer = setTimeout(() => {
      helloTimer = null
      if (state.connected && !state.helloReceived && state.ready === null) {
        state.ready = false
        check()
      }
    }, HELLO_GRACE_MS)
  }

  /** A hello arrived: no need to wait for one; a ready model needs no poll. */
  function hello(ready: boolean): void {
    if (helloTimer !== null) clearTimeout(helloTimer)
    helloTimer = null
    if (ready) {
      poll?.stop()
      poll = null
    }
  }

  onBeforeUnmount(stop)
  return { check, stop, opened, hello }
}
