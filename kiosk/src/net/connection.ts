// The page's one WebSocket to the daemon, reopened automatically with back-off. The rest of the page only
// sees frames and a small status object; it never touches the socket.
import { backoffDelay } from './backoff'

export type LinkPhase = 'connecting' | 'open' | 'waiting'

export interface LinkStatus {
  phase: LinkPhase
  /** Consecutive failed or dropped connections since the last successful open. */
  failures: number
  /** When the next attempt starts (ms since epoch), while phase is 'waiting'. */
  retryAt: number | null
  /** Whether this page has ever been connected (a first connect vs a reconnect). */
  everOpened: boolean
}

export interface ConnectionOptions {
  url: string
  onFrame: (data: string) => void
  onOpen: () => void
  onClose: (code: number) => void
  onStatus: (status: LinkStatus) => void
  createSocket?: (url: string) => WebSocket
  random?: () => number
  now?: () => number
}

export interface Connection {
  /** Sends a frame; false (and nothing sent) when the socket is not open. */
  send: (frame: object) => boolean
  /** Skips the wait and tries again now (e.g. the network came back). */
  retryNow: () => void
  close: () => void
}

export function connect(options: ConnectionOptions): Connection {
  const createSocket = options.createSocket ?? ((url: string) => new WebSocket(url))
  const now = options.now ?? Date.now
  const status: LinkStatus = { phase: 'connecting', failures: 0, retryAt: null, everOpened: false }
  let socket: WebSocket | null = null
  let timer: ReturnType<typeof setTimeout> | null = null
  let closed = false

  const report = () => options.onStatus({ ...status })

  function open(): void {
    timer = null
    status.phase = 'connecting'
    status.retryAt = null
    report()
    const ws = createSocket(options.url)
    socket = ws
    ws.onopen = () => {
      status.phase = 'open'
      status.failures = 0 // a good connection resets the back-off
      status.everOpened = true
      report()
      options.onOpen()
    }
    ws.onmessage = (event: MessageEvent) => {
      if (typeof event.data === 'string') options.onFrame(event.data)
    }
    ws.onclose = (event: CloseEvent) => onClosed(ws, event.code)
    // An error is always followed by a close event, which does the work.
    ws.onerror = () => undefined
  }

  function onClosed(ws: WebSocket, code: number): void {
    if (ws !== socket) return
    const wasOpen = status.phase === 'open'
    socket = null
    if (wasOpen) options.onClose(code)
    if (closed) return
    const delay = backoffDelay(status.failures, options.random)
    status.failures += 1
    status.phase = 'waiting'
    status.retryAt = now() + delay
    report()
    timer = setTimeout(open, delay)
  }

  open()
  return {
    send(frame) {
      if (socket === null || status.phase !== 'open' || socket.readyState !== 1) return false
      socket.send(JSON.stringify(frame))
      return true
    },
    retryNow() {
      if (closed || status.phase !== 'waiting') return
      if (timer !== null) clearTimeout(timer)
      open()
    },
    close() {
      closed = true
      if (timer !== null) clearTimeout(timer)
      socket?.close(1000)
    },
  }
}

/** ws://host/ws or wss://host/ws on the page's own origin. */
export function socketUrl(location: Location): string {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
  return `${scheme}//${location.host}/ws`
}
