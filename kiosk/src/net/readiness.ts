// While the model is loading the daemon answers /readyz with 503; the page asks every second until 200.

export interface ReadinessPoll {
  stop: () => void
}

export function pollUntilReady(
  onReady: () => void,
  intervalMs = 1000,
  fetcher: typeof fetch = (...args) => fetch(...args),
): ReadinessPoll {
  let stopped = false
  let timer: ReturnType<typeof setTimeout> | null = null

  async function check(): Promise<void> {
    timer = null
    let ready = false
    try {
      const response = await fetcher('/readyz', { cache: 'no-store' })
      ready = response.status === 200
    } catch {
      ready = false // the daemon is unreachable: the WebSocket side reports that
    }
    if (stopped) return
    if (ready) {
      stopped = true
      onReady()
    } else {
      timer = setTimeout(() => void check(), intervalMs)
    }
  }

  void check()
  return {
    stop() {
      stopped = true
      if (timer !== null) clearTimeout(timer)
    },
  }
}
