// Syntax highlighting for fenced code: highlight.js core with a handful of languages an assistant is likely
// to show, which keeps the bundle far smaller than the full set. Unknown languages are shown plain.
import hljs from 'highlight.js/lib/core'
import bash from 'highlight.js/lib/languages/bash'
import c from 'highlight.js/lib/languages/c'
import cpp from 'highlight.js/lib/languages/cpp'
import css from 'highlight.js/lib/languages/css'
import java from 'highlight.js/lib/languages/java'
import javascript from 'highlight.js/lib/languages/javascript'
import json from 'highlight.js/lib/languages/json'
import python from 'highlight.js/lib/languages/python'
import sql from 'highlight.js/lib/languages/sql'
import typescript from 'highlight.js/lib/languages/typescript'
import xml from 'highlight.js/lib/languages/xml'
import yaml from 'highlight.js/lib/languages/yaml'

const LANGUAGES = { bash, c, cpp, css, java, javascript, json, python, sql, typescript, xml, yaml }
for (const [name, language] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, language)

/** markdown-it's `highlight` option: HTML with hljs classes, or '' to let markdown-it escape the code. */
export function highlightCode(code: string, lang: string): string {
  const name = lang.trim().toLowerCase()
  if (name === '' || !hljs.getLanguage(name)) return ''
  try {
    return hljs.highlight(code, { language: name, ignoreIllegals: true }).value
  } catch {
    return '' // A grammar failing on odd input must not break the answer: show it plain.
  }
}
