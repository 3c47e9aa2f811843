// The operator unlock on the screen: a PIN buys a short-lived token that shows the whole archive in the
// drawer, until Lock, its expiry, or a new visit. Wrong PINs count down; a lockout is shown as a countdown.
import { computed, onBeforeUnmount, ref } from 'vue'
import { lock as lockApi, unlock as unlockApi, type UnlockResult } from './net/operatorApi'

export type PinProblem =
  | { kind: 'wrong_pin'; attemptsLeft: number | null }
  | { kind: 'locked_out' }
  | { kind: 'failed' }

export function useOperator() {
  const token = ref<string | null>(null)
  const problem = ref<PinProblem | null>(null)
  const lockedUntil = ref(0)
  const now = ref(Date.now())
  const busy = ref(false)
  let expiry: ReturnType<typeof setTimeout> | null = null
  let ticker: ReturnType<typeof setInterval> | null = null

  const lockoutSeconds = computed(() => Math.max(0, Math.ceil((lockedUntil.value - now.value) / 1000)))

  function stopTicker(): void {
    if (ticker !== null) clearInterval(ticker)
    ticker = null
  }

  function startLockout(seconds: number): void {
    now.value = Date.now()
    lockedUntil.value = now.value + seconds * 1000
    stopTicker()
    ticker = setInterval(() => {
      now.value = Date.now()
      if (lockoutSeconds.value === 0) {
        stopTicker()
        problem.value = null
      }
    }, 1000)
  }

  function unlocked(value: string, expiresIn: number): void {
    token.value = value
    problem.value = null
    if (expiry !== null) clearTimeout(expiry)
    expiry = setTimeout(() => void lock(), expiresIn * 1000)
  }

  function apply(result: UnlockResult): boolean {
    switch (result.kind) {
      case 'unlocked': unlocked(result.token, result.expiresIn); return true
      case 'wrong_pin': problem.value = result; return false
      case 'locked_out': problem.value = result; startLockout(result.retryAfter); return false
      default: problem.value = { kind: 'failed' }; return false
    }
  }

  /** True when the PIN unlocked the archive. */
  async function unlock(pin: string): Promise<boolean> {
    if (busy.value || lockoutSeconds.value > 0) return false
    busy.value = true
    try {
      return apply(await unlockApi(pin))
    } finally {
      busy.value = false
    }
  }

  async function lock(): Promise<void> {
    const held = token.value
    token.value = null
    if (expiry !== null) clearTimeout(expiry)
    expiry = null
    if (held !== null) await lockApi(held)
  }

  function clearProblem(): void {
    if (lockoutSeconds.value === 0) problem.value = null
  }

  onBeforeUnmount(() => {
    stopTicker()
    if (expiry !== null) clearTimeout(expiry)
  })

  return { token, problem, lockoutSeconds, busy, unlock, lock, clearProblem }
}

export type Operator = ReturnType<typeof useOperator>
