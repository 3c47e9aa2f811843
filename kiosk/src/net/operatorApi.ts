// The operator unlock (docs/protocol.md): a PIN typed on the screen buys a short-lived operator token that
// shows the whole archive in the drawer.
import { ApiError, OPERATOR_HEADER, request } from './sessionsApi'

export type UnlockResult =
  | { kind: 'unlocked'; token: string; expiresIn: number }
  | { kind: 'wrong_pin'; attemptsLeft: number | null }
  | { kind: 'locked_out'; retryAfter: number }
  | { kind: 'disabled' }
  | { kind: 'failed' }

const JSON_HEADERS = { 'Content-Type': 'application/json' }

function refused(error: unknown): UnlockResult {
  if (!(error instanceof ApiError)) return { kind: 'failed' }
  if (error.code === 'wrong_pin') {
    const left = error.body.attempts_left
    return { kind: 'wrong_pin', attemptsLeft: typeof left === 'number' ? left : null }
  }
  if (error.code === 'locked_out' || error.status === 429) return { kind: 'locked_out', retryAfter: error.retryAfter ?? 60 }
  if (error.code === 'operator_unlock_disabled' || error.status === 404) return { kind: 'disabled' }
  return { kind: 'failed' }
}

export async function unlock(pin: string): Promise<UnlockResult> {
  try {
    const response = await request('/api/operator/unlock', {
      method: 'POST', headers: JSON_HEADERS, body: JSON.stringify({ pin }),
    })
    const body = (await response.json()) as { operator?: unknown; expires_in?: unknown }
    if (typeof body.operator !== 'string' || body.operator === '') return { kind: 'failed' }
    const expiresIn = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 300
    return { kind: 'unlocked', token: body.operator, expiresIn }
  } catch (error) {
    return refused(error)
  }
}

/** Best effort: the token also expires by itself. */
export async function lock(token: string): Promise<void> {
  try {
    await request('/api/operator/lock', { method: 'POST' }, { [OPERATOR_HEADER]: token })
  } catch {
    // gone already (expired, or the daemon restarted): locked either way
  }
}
