// The connection's status as the status line needs it: the link phase, a clock for the reconnect countdown
// and whether the device reports a network at all.
import { onBeforeUnmount, ref, shallowRef } from 'vue'
import type { LinkStatus } from './net/connection'

export function useLink(onNetworkBack: () => void) {
  const link = shallowRef<LinkStatus>({ phase: 'connecting', failures: 0, retryAt: null, everOpened: false })
  const now = ref(Date.now())
  const online = ref(typeof navigator === 'undefined' ? true : navigator.onLine !== false)
  let ticker: ReturnType<typeof setInterval> | null = null

  function onStatus(status: LinkStatus): void {
    link.value = status
    now.value = Date.now()
    // The countdown needs a clock only while waiting to reconnect.
    if (status.phase === 'waiting' && ticker === null) {
      ticker = setInterval(() => (now.value = Date.now()), 250)
    } else if (status.phase !== 'waiting' && ticker !== null) {
      clearInterval(ticker)
      ticker = null
    }
  }

  const onOnline = () => {
    online.value = true
    onNetworkBack()
  }
  const onOffline = () => (online.value = false)
  window.addEventListener('online', onOnline)
  window.addEventListener('offline', onOffline)

  onBeforeUnmount(() => {
    window.removeEventListener('online', onOnline)
    window.removeEventListener('offline', onOffline)
    if (ticker !== null) clearInterval(ticker)
  })

  return { link, now, online, onStatus }
}
