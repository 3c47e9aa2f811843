// Key layouts for simple-keyboard. Special keys are {named}; the rest type themselves.
import type { Lang } from '../i18n'

export type Layer = 'default' | 'shift' | 'symbols'

export const LAYOUT: Record<Layer, string[]> = {
  default: [
    'q w e r t y u i o p {bksp}',
    'a s d f g h j k l {enter}',
    '{shift} z x c v b n m , . ?',
    '{symbols} {lang} {space} {hide}',
  ],
  shift: [
    'Q W E R T Y U I O P {bksp}',
    'A S D F G H J K L {enter}',
    '{shift} Z X C V B N M , . !',
    '{symbols} {lang} {space} {hide}',
  ],
  symbols: [
    '1 2 3 4 5 6 7 8 9 0 {bksp}',
    '@ # $ % & * - + = / {enter}',
    '( ) " \' : ; ! ? , . _',
    '{abc} {lang} {space} {hide}',
  ],
}

/** Chinese punctuation typed by the same keys when the keyboard is in Chinese. */
export const FULL_WIDTH: Record<string, string> = {
  ',': '，', '.': '。', '?': '？', '!': '！', ':': '：', ';': '；', '(': '（', ')': '）', '"': '“',
}

const LABELS: Record<Lang, Record<string, string>> = {
  en: { '{bksp}': '⌫', '{enter}': 'Ask', '{shift}': '⇧', '{space}': 'space', '{symbols}': '?123',
    '{abc}': 'ABC', '{lang}': '中文', '{hide}': '⌄' },
  zh: { '{bksp}': '⌫', '{enter}': '发送', '{shift}': '⇧', '{space}': '空格', '{symbols}': '?123',
    '{abc}': '拼音', '{lang}': 'EN', '{hide}': '⌄' },
}

/** What the keys show: in Chinese the punctuation keys show the full-width marks they type. */
export function displayFor(lang: Lang): Record<string, string> {
  return lang === 'zh' ? { ...LABELS.zh, ...FULL_WIDTH } : { ...LABELS.en }
}

/** Accessible names of the keys that show a symbol. A key that shows a word ("Ask", "中文", "?123") is
 * named by that word: a different aria-label would break WCAG's "label in name" (axe:
 * label-content-name-mismatch). */
export const KEY_NAMES: Record<string, string> = {
  '{bksp}': 'backspace', '{shift}': 'shift', '{hide}': 'hide keyboard',
}
