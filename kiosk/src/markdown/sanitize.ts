// The last gate before model output reaches the DOM. markdown-it already runs with `html: false`; this
// allow-list keeps only the inert elements the renderer produces, so nothing can run, load or navigate.
import DOMPurify, { type Config } from 'dompurify'

const CONFIG: Config = {
  ALLOWED_TAGS: [
    'p', 'br', 'hr', 'strong', 'em', 's', 'del', 'code', 'pre', 'span', 'div', 'blockquote',
    'ul', 'ol', 'li', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6',
    'table', 'thead', 'tbody', 'tr', 'th', 'td',
  ],
  // `start` keeps an ordered list's numbering; `class` carries highlighting and layout hooks.
  ALLOWED_ATTR: ['class', 'start'],
  // The page runs under a CSP without 'unsafe-inline' styles: styles from content are never wanted.
  FORBID_TAGS: ['style', 'script', 'iframe', 'svg', 'math', 'img', 'a', 'form', 'object', 'embed'],
  FORBID_ATTR: ['style', 'href', 'src', 'srcset', 'action', 'formaction', 'xlink:href'],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  ALLOW_UNKNOWN_PROTOCOLS: false,
  RETURN_TRUSTED_TYPE: false,
}

export function sanitizeHtml(html: string): string {
  return DOMPurify.sanitize(html, CONFIG) as string
}
