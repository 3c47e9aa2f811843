// The text of an error notice in the current language (the daemon's own message is English-only).
import type { Notice } from '../chat/types'
import { t, type MessageKey } from './index'
import { en } from './messages'

export function noticeText(notice: Notice): string {
  if (notice.code === 'busy') {
    return notice.retryAfter !== null
      ? t('error.busy', { s: Math.max(1, Math.ceil(notice.retryAfter)) })
      : t('error.busyNoTime')
  }
  const key = `error.${notice.code}`
  if (key !== 'error.generic' && key !== 'error.busyNoTime' && key in en) return t(key as MessageKey)
  return t('error.generic', { code: notice.code })
}
