import { describe, expect, it } from 'vitest'
import { detectLanguage, format, TABLES } from '../src/i18n'
import { noticeText } from '../src/i18n/notices'

describe('i18n', () => {
  it('has the same keys in English and Chinese, none empty', () => {
    expect(Object.keys(TABLES.zh).sort()).toEqual(Object.keys(TABLES.en).sort())
    for (const table of [TABLES.en, TABLES.zh]) {
      for (const value of Object.values(table)) expect(value.trim()).not.toBe('')
    }
  })

  it('uses the same placeholders in both languages', () => {
    const names = (s: string) => (s.match(/\{\w+\}/g) ?? []).sort()
    for (const key of Object.keys(TABLES.en) as Array<keyof typeof TABLES.en>) {
      expect(names(TABLES.zh[key]), key).toEqual(names(TABLES.en[key]))
    }
  })

  it('detects the language from the stored choice, then navigator.languages', () => {
    expect(detectLanguage(null, ['zh-CN', 'en'])).toBe('zh')
    expect(detectLanguage(null, ['zh-Hant-TW'])).toBe('zh')
    expect(detectLanguage(null, ['en-US', 'zh'])).toBe('en')
    expect(detectLanguage(null, ['de-DE', 'zh'])).toBe('zh')
    expect(detectLanguage(null, [])).toBe('en')
    expect(detectLanguage('zh', ['en'])).toBe('zh')
    expect(detectLanguage('fr', ['zh'])).toBe('zh')
  })

  it('fills placeholders', () => {
    expect(format('in {s} s, {x}', { s: 3 })).toBe('in 3 s, {x}')
  })

  it('words notices', () => {
    expect(noticeText({ code: 'busy', retryAfter: 2, detail: null })).toBe('The kiosk is busy — try again in 2 s.')
    expect(noticeText({ code: 'engine_error', retryAfter: null, detail: null })).toContain('engine_error')
    expect(noticeText({ code: 'generic', retryAfter: null, detail: null })).toContain('(generic)')
  })
})
