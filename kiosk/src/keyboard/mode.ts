// When the on-screen keyboard shows: "auto" on touch input only, "always", or "off".
export type KeyboardMode = 'auto' | 'always' | 'off'

const MODES: readonly KeyboardMode[] = ['auto', 'always', 'off']

export function parseMode(value: unknown): KeyboardMode | null {
  return typeof value === 'string' && (MODES as readonly string[]).includes(value) ? (value as KeyboardMode) : null
}

/** `?keyboard=always|auto|off` in the page's address overrides the daemon's setting (tests, trials). */
export function queryMode(search: string = typeof location === 'undefined' ? '' : location.search): KeyboardMode | null {
  return parseMode(new URLSearchParams(search).get('keyboard'))
}

export interface VisibilityInput {
  mode: KeyboardMode
  focused: boolean
  /** The last pointer input was a touch or pen (or, before any, the screen's pointer is coarse). */
  touch: boolean
  /** A physical key was pressed since the last touch. */
  physicalKey: boolean
  /** The visitor hid the keyboard with its own key. */
  dismissed: boolean
}

export function keyboardVisible(s: VisibilityInput): boolean {
  if (s.mode === 'off' || s.dismissed) return false
  if (s.mode === 'always') return true
  return s.focused && s.touch && !s.physicalKey
}
