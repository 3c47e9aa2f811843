// Short "when" labels for the history list: relative for recent sessions, a date for older ones.
import { translate, type Lang } from '../i18n'

const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR

function startOfDay(ms: number): number {
  const d = new Date(ms)
  d.setHours(0, 0, 0, 0)
  return d.getTime()
}

export function shortTime(iso: string, now: number, lang: Lang): string {
  const then = Date.parse(iso)
  if (Number.isNaN(then)) return ''
  const ago = Math.max(0, now - then)
  if (ago < MINUTE) return translate(lang, 'time.justNow')
  if (ago < HOUR) return translate(lang, 'time.minutes', { n: Math.floor(ago / MINUTE) })
  if (then >= startOfDay(now)) return translate(lang, 'time.hours', { n: Math.floor(ago / HOUR) })
  const days = Math.round((startOfDay(now) - startOfDay(then)) / DAY)
  if (days <= 1) return translate(lang, 'time.yesterday')
  if (days < 7) return translate(lang, 'time.days', { n: days })
  const sameYear = new Date(then).getFullYear() === new Date(now).getFullYear()
  return new Date(then).toLocaleDateString(lang === 'zh' ? 'zh-CN' : 'en-GB', {
    day: 'numeric', month: 'short', ...(sameYear ? {} : { year: 'numeric' }),
  })
}
