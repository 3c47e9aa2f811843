// The page's language: chosen from the stored choice, else navigator.languages (zh* -> Chinese), and
// switchable at any time. Strings are looked up at render time so a switch re-labels everything at once.
import { ref } from 'vue'
import { en, zh, type MessageKey } from './messages'

export type Lang = 'en' | 'zh'
export type { MessageKey }

export const TABLES: Record<Lang, Record<MessageKey, string>> = { en, zh }
const STORAGE_KEY = 'kiosk.lang'

export function detectLanguage(stored: string | null, languages: readonly string[]): Lang {
  if (stored === 'en' || stored === 'zh') return stored
  for (const tag of languages) {
    if (/^zh\b/i.test(tag)) return 'zh'
    if (/^en\b/i.test(tag)) return 'en'
  }
  return 'en'
}

export function format(template: string, params: Record<string, string | number> = {}): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => (name in params ? String(params[name]) : whole))
}

export function translate(lang: Lang, key: MessageKey, params?: Record<string, string | number>): string {
  return format(TABLES[lang][key] ?? en[key], params)
}

function readStored(): string | null {
  try {
    return window.localStorage.getItem(STORAGE_KEY)
  } catch {
    return null // storage may be disabled in a locked-down kiosk browser
  }
}

function browserLanguages(): readonly string[] {
  if (typeof navigator === 'undefined') return []
  return navigator.languages?.length ? navigator.languages : [navigator.language ?? 'en']
}

export const lang = ref<Lang>(detectLanguage(readStored(), browserLanguages()))

/** Sets <html lang> (fonts and screen readers follow it) without remembering a choice. */
export function applyDocumentLanguage(): void {
  document.documentElement.lang = lang.value
  document.title = translate(lang.value, 'appTitle')
}

export function setLanguage(next: Lang): void {
  lang.value = next
  applyDocumentLanguage()
  try {
    window.localStorage.setItem(STORAGE_KEY, next)
  } catch {
    // not remembered; still switched for this page
  }
}

export function toggleLanguage(): void {
  setLanguage(lang.value === 'en' ? 'zh' : 'en')
}

const HAN = /[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]/

/** The language of a visitor's question, as the daemon judges it: Chinese when it has Han characters. */
export function questionLanguage(text: string): Lang {
  return HAN.test(text) ? 'zh' : 'en'
}

/** Reactive lookup: components that call t() re-render when the language changes. */
export function t(key: MessageKey, params?: Record<string, string | number>): string {
  return translate(lang.value, key, params)
}
