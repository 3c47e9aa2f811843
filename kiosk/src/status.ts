// The one-word state of the kiosk shown in the status line (and exposed as data-state for tests).
import type { LinkStatus } from './net/connection'

export type StatusState = 'connecting' | 'reconnecting' | 'loading' | 'ready' | 'thinking' | 'speaking' | 'offline'

export interface StatusInput {
  link: LinkStatus
  connected: boolean
  /** null: not known yet on this connection (no hello). */
  ready: boolean | null
  answering: boolean
  speaking: boolean
  /** navigator.onLine: false when the device itself has no network. */
  online: boolean
  now: number
}

export interface Status {
  state: StatusState
  /** Whole seconds until the next connection attempt, while waiting for one. */
  secondsLeft: number | null
}

/** After this many failed attempts in a row the daemon is considered gone for now, not just restarting. */
export const OFFLINE_AFTER_FAILURES = 6

function disconnected(input: StatusInput): Status {
  const { link } = input
  const secondsLeft =
    link.phase === 'waiting' && link.retryAt !== null ? Math.max(0, Math.ceil((link.retryAt - input.now) / 1000)) : null
  if (!link.everOpened && link.failures === 0) return { state: 'connecting', secondsLeft: null }
  if (!input.online || link.failures >= OFFLINE_AFTER_FAILURES) return { state: 'offline', secondsLeft }
  return { state: 'reconnecting', secondsLeft }
}

export function deriveStatus(input: StatusInput): Status {
  if (input.link.phase !== 'open' || !input.connected) return disconnected(input)
  if (input.ready === null) return { state: 'connecting', secondsLeft: null }
  if (!input.ready) return { state: 'loading', secondsLeft: null }
  if (input.speaking) return { state: 'speaking', secondsLeft: null }
  if (input.answering) return { state: 'thinking', secondsLeft: null }
  return { state: 'ready', secondsLeft: null }
}
