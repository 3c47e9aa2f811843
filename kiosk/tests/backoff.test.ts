import { describe, expect, it } from 'vitest'
import { backoffDelay } from '../src/net/backoff'

describe('backoffDelay', () => {
  it('doubles from 0.5 s up to 10 s without jitter at the midpoint', () => {
    const schedule = Array.from({ length: 8 }, (_, n) => backoffDelay(n, () => 0.5))
    expect(schedule).toEqual([500, 1000, 2000, 4000, 8000, 10000, 10000, 10000])
  })

  it('spreads each delay by ±20 % and never exceeds the cap', () => {
    expect(backoffDelay(0, () => 0)).toBe(400)
    expect(backoffDelay(0, () => 1)).toBe(600)
    expect(backoffDelay(3, () => 0)).toBe(3200)
    expect(backoffDelay(10, () => 1)).toBe(10000)
    expect(backoffDelay(10, () => 0)).toBe(8000)
  })

  it('copes with absurd attempt numbers', () => {
    expect(backoffDelay(1e9, () => 0.5)).toBe(10000)
    expect(backoffDelay(-3, () => 0.5)).toBe(500)
  })
})
