// When Enter in the question box sends. Enter that confirms an IME composition (Chinese, Japanese input)
// only picks the characters: Chromium reports it with isComposing true or the legacy keyCode 229.

export interface KeyLike {
  key: string
  shiftKey: boolean
  isComposing?: boolean
  keyCode?: number
  altKey?: boolean
  ctrlKey?: boolean
  metaKey?: boolean
}

export function isSendKey(event: KeyLike, composing = false): boolean {
  if (event.key !== 'Enter') return false
  if (composing || event.isComposing || event.keyCode === 229) return false
  return !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey
}
