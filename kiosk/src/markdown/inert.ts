// markdown-it rules that keep the kiosk on its page: links become plain text followed by their address, and
// images become their alt text (nothing is loaded). Table alignment becomes a class, since the page's CSP
// (and the sanitizer) drop inline styles.
import type { MarkdownIt, RendererRule, Token } from 'markdown-it'

interface LinkEnv {
  linkStack?: string[]
}

function linkStack(env: unknown): string[] {
  const e = env as LinkEnv
  if (!e.linkStack) e.linkStack = []
  return e.linkStack
}

export function useInertLinks(md: MarkdownIt): void {
  const escape = md.utils.escapeHtml
  md.renderer.rules.link_open = (tokens, idx, _options, env) => {
    const token = tokens[idx]
    // An autolink's text already is its address: do not repeat it.
    const shown = token.markup === 'autolink' || token.markup === 'linkify' ? '' : String(token.attrGet('href') ?? '')
    linkStack(env).push(shown)
    return '<span class="md-link">'
  }
  md.renderer.rules.link_close = (_tokens, _idx, _options, env) => {
    const href = linkStack(env).pop() ?? ''
    return href ? `</span><span class="md-url"> (${escape(href)})</span>` : '</span>'
  }
  md.renderer.rules.image = (tokens, idx, options, env, self) => {
    const alt = self.renderInlineAsText(tokens[idx].children ?? [], options, env)
    return alt ? `<span class="md-image">${escape(alt)}</span>` : ''
  }
}

const alignedCell: RendererRule = (tokens, idx, options, _env, self) => {
  const token: Token = tokens[idx]
  const style = String(token.attrGet('style') ?? '')
  const align = /text-align:\s*(left|center|right)/.exec(style)
  if (token.attrs) token.attrs = token.attrs.filter(([name]) => name !== 'style')
  if (align) token.attrJoin('class', `align-${align[1]}`)
  return self.renderToken(tokens, idx, options)
}

export function useTableClasses(md: MarkdownIt): void {
  md.renderer.rules.th_open = alignedCell
  md.renderer.rules.td_open = alignedCell
  // Wide tables scroll sideways inside the bubble instead of widening the page.
  md.renderer.rules.table_open = (tokens, idx, options, _env, self) =>
    `<div class="md-table">${self.renderToken(tokens, idx, options)}`
  md.renderer.rules.table_close = (tokens, idx, options, _env, self) =>
    `${self.renderToken(tokens, idx, options)}</div>`
}
