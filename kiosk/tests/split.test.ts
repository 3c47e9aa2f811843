import { describe, expect, it } from 'vitest'
import { splitStable, stableLength } from '../src/markdown/split'
import { renderMarkdown } from '../src/markdown/render'

const F = '```'

describe('splitStable', () => {
  const cases: Array<[string, string, string]> = [
    // [name, source, expected stable part]
    ['empty', '', ''],
    ['single unfinished paragraph', 'Hello wor', ''],
    ['one finished paragraph, no following block yet', 'Hello.\n\n', ''],
    ['paragraph then a new one begun', 'One.\n\nTwo', ''],
    ['paragraph then a complete line of the next', 'One.\n\nTwo\n', 'One.\n\n'],
    ['several blocks: cut at the last', 'A\n\nB\n\nC\nstill C', 'A\n\nB\n\n'],
    ['open fence with a blank line inside', `Intro\n\n${F}py\na = 1\n\nb = 2\n`, 'Intro\n\n'],
    ['blank line inside a closed fence', `${F}\na\n\nb\n${F}\n\nAfter\n`, `${F}\na\n\nb\n${F}\n\n`],
    ['tilde fence is not closed by backticks', `~~~\nx\n${F}\n\ny\n`, ''],
    ['longer closing fence closes', `${F}\nx\n\`\`\`\`\n\nNext\n`, `${F}\nx\n\`\`\`\`\n\n`],
    ['shorter closing fence does not close', `\`\`\`\`\nx\n${F}\n\nNext\n`, ''],
    ['inline backticks in info are not a fence', '``` a ` b\n\nNext\n', '``` a ` b\n\n'],
    ['loose list continues after a blank line', '- one\n\n- two\n', ''],
    ['ordered loose list continues', '1. one\n\n2. two\n', ''],
    ['list ends with a paragraph', '- one\n- two\n\nAfter the list\n', '- one\n- two\n\n'],
    ['indented continuation is not a cut', '- one\n\n  more of one\n', ''],
    ['indented code is not a cut', 'Para\n\n    code\n', ''],
    ['heading then paragraph', '# Title\n\nBody\n', '# Title\n\n'],
    ['table after a paragraph', 'Intro\n\n| a | b |\n', 'Intro\n\n'],
    ['CRLF line ends', 'One\r\n\r\nTwo\r\n', 'One\r\n\r\n'],
    ['fence opened right after a cut', `Para\n\n${F}js\nlet a\n\nlet b\n`, 'Para\n\n'],
  ]
  it.each(cases)('%s', (_name, source, stable) => {
    const split = splitStable(source)
    expect(split.stable).toBe(stable)
    expect(split.stable + split.tail).toBe(source)
  })

  it('resumes from an earlier cut with the same result', () => {
    const text = `A\n\n${F}\nx\n\ny\n${F}\n\nB\n\n- l\n\nC\n`
    let from = 0
    for (let n = 1; n <= text.length; n++) {
      const whole = stableLength(text.slice(0, n))
      expect(stableLength(text.slice(0, n), from)).toBe(whole)
      from = whole
    }
  })

  it('rendering the stable part and the tail apart equals rendering the whole', () => {
    const text = [
      '# Steps', '', '1. First', '2. Second', '', 'Some **bold** text.', '',
      `${F}python`, 'print("a")', '', 'print("b")', F, '', '| a | b |', '|---|--:|', '| 1 | 2 |', '', 'End.', '',
    ].join('\n')
    for (let n = 1; n <= text.length; n += 7) {
      const source = text.slice(0, n)
      const { stable, tail } = splitStable(source)
      expect(renderMarkdown(stable) + renderMarkdown(tail)).toBe(renderMarkdown(source))
    }
  })
})
