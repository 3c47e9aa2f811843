// Model output and stored history are untrusted: Markdown with raw HTML switched off, inert links and
// images, then the sanitizer. One shared instance: building markdown-it is not free.
import MarkdownIt from 'markdown-it'
import { highlightCode } from './highlight'
import { useInertLinks, useTableClasses } from './inert'
import { sanitizeHtml } from './sanitize'

const md = new MarkdownIt({
  html: false,
  linkify: false,
  typographer: false,
  // Chat models write single newlines as line breaks; for Chinese, a soft break would also add a space.
  breaks: true,
  highlight: highlightCode,
})
useInertLinks(md)
useTableClasses(md)

export function renderMarkdown(source: string): string {
  if (source === '') return ''
  return sanitizeHtml(md.render(source, {}))
}
