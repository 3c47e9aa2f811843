import { describe, expect, it } from 'vitest'
import { renderMarkdown } from '../src/markdown/render'

function dom(source: string): HTMLElement {
  const div = document.createElement('div')
  div.innerHTML = renderMarkdown(source)
  return div
}

const ACTIVE = 'script, style, iframe, svg, math, img, a, object, embed, form, link, meta, base, video, audio'

function assertInert(root: HTMLElement): void {
  expect(root.querySelectorAll(ACTIVE)).toHaveLength(0)
  for (const el of Array.from(root.querySelectorAll('*'))) {
    for (const attr of Array.from(el.attributes)) {
      expect(['class', 'start']).toContain(attr.name)
      expect(attr.value.toLowerCase()).not.toContain('javascript:')
    }
  }
}

describe('renderMarkdown: untrusted output stays inert', () => {
  const attacks: Array<[string, string]> = [
    ['script tag', '<script>alert(1)</script>'],
    ['img onerror', '<img src=x onerror=alert(1)>'],
    ['markdown javascript link', '[x](javascript:alert(1))'],
    ['html javascript link', '<a href="javascript:alert(1)">x</a>'],
    ['iframe', '<iframe src="https://example.com"></iframe>'],
    ['svg onload', '<svg onload=alert(1)><circle r=1 /></svg>'],
    ['style tag', '<style>body { display: none }</style>'],
    ['style attribute', '<p style="color:red">x</p>'],
    ['markdown image', '![alt text](https://example.com/a.png)'],
    ['image with javascript', '![x](javascript:alert(1))'],
    ['data link', '[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)'],
    ['autolink', '<javascript:alert(1)>'],
    ['fence info injection', '```"><script>alert(1)</script>\ncode\n```'],
    ['html inside inline code', '`<script>alert(1)</script>`'],
    ['html inside a code block', '```html\n<script>alert(1)</script>\n<img src=x onerror=alert(1)>\n```'],
    ['table with html', '| <b onclick=x>a</b> | b |\n|---|---|\n| <img src=x> | 2 |'],
  ]
  it.each(attacks)('%s', (_name, source) => {
    assertInert(dom(source))
  })

  it('shows raw HTML as text', () => {
    const root = dom('<script>alert(1)</script>')
    expect(root.textContent).toContain('<script>alert(1)</script>')
  })

  it('shows HTML inside code blocks as escaped text', () => {
    const root = dom('```html\n<script>alert(1)</script>\n```')
    const code = root.querySelector('pre code')
    expect(code).not.toBeNull()
    expect(code!.textContent).toContain('<script>alert(1)</script>')
    expect(root.querySelector('script')).toBeNull()
  })

  it('renders links as their text followed by the address, without href', () => {
    const root = dom('See [the map](https://example.com/map) here')
    expect(root.querySelector('.md-link')!.textContent).toBe('the map')
    expect(root.querySelector('.md-url')!.textContent).toBe(' (https://example.com/map)')
    expect(root.querySelector('[href]')).toBeNull()
  })

  it('does not turn a javascript: link into a link at all', () => {
    const root = dom('[x](javascript:alert(1))')
    expect(root.querySelector('.md-link')).toBeNull()
    expect(root.textContent).toContain('[x](javascript:alert(1))')
  })

  it('renders images as their alt text', () => {
    const root = dom('![A <b>map</b>](https://example.com/a.png)')
    expect(root.querySelector('img')).toBeNull()
    expect(root.querySelector('.md-image')!.textContent).toBe('A <b>map</b>')
  })
})

describe('renderMarkdown: formatting', () => {
  it('renders tables, alignment as a class', () => {
    const root = dom('| Name | Price |\n|:-----|------:|\n| Tea | 3 |')
    expect(root.querySelector('.md-table > table')).not.toBeNull()
    expect(root.querySelectorAll('th')).toHaveLength(2)
    expect(root.querySelector('td.align-right')!.textContent).toBe('3')
    expect(root.querySelector('[style]')).toBeNull()
  })

  it('highlights code of a known language', () => {
    const root = dom('```python\ndef f():\n    return "x"\n```')
    expect(root.querySelector('pre code.language-python')).not.toBeNull()
    expect(root.querySelector('.hljs-keyword')!.textContent).toBe('def')
    expect(root.querySelector('.hljs-string')).not.toBeNull()
  })

  it('shows code of an unknown language plain', () => {
    const root = dom('```klingon\nqapla <x>\n```')
    expect(root.querySelector('pre code')!.textContent).toBe('qapla <x>\n')
  })

  it('renders an unclosed fence as a code block (while streaming)', () => {
    const root = dom('Here:\n\n```js\nconst a = 1')
    expect(root.querySelector('pre code')!.textContent).toContain('const a = 1')
  })

  it('renders lists, emphasis, inline code and headings', () => {
    const root = dom('## Steps\n\n1. *one*\n2. **two**\n\n- `x`')
    expect(root.querySelector('h2')!.textContent).toBe('Steps')
    expect(root.querySelectorAll('ol > li')).toHaveLength(2)
    expect(root.querySelector('em')!.textContent).toBe('one')
    expect(root.querySelector('strong')!.textContent).toBe('two')
    expect(root.querySelector('ul code')!.textContent).toBe('x')
  })

  it('keeps an ordered list start number', () => {
    expect(dom('3. three').querySelector('ol')!.getAttribute('start')).toBe('3')
  })

  it('renders Chinese text and single newlines as line breaks', () => {
    const root = dom('你好\n世界')
    expect(root.querySelector('br')).not.toBeNull()
    expect(root.textContent).toContain('你好')
  })
})
