// Where a growing Markdown answer can be cut so the part before the cut never renders differently again.
// The streaming view renders that stable part once and re-renders only the unfinished tail each frame,
// which keeps long answers smooth. The cut is conservative: it is only made where a new top-level block
// has visibly begun, so rendering the parts separately gives the same HTML as rendering the whole.

interface Fence {
  char: string
  length: number
}

const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})(.*)$/
const FENCE_CLOSE = /^ {0,3}(`{3,}|~{3,})[ \t]*$/
const BLANK = /^[ \t]*$/
const LIST_ITEM = /^([*+-]|\d{1,9}[.)])([ \t]|$)/

function openFence(line: string): Fence | null {
  const m = FENCE_OPEN.exec(line)
  if (!m) return null
  const marker = m[1]
  // A backtick fence's info string may not contain backticks (that is inline code instead).
  if (marker[0] === '`' && m[2].includes('`')) return null
  return { char: marker[0], length: marker.length }
}

function closesFence(line: string, fence: Fence): boolean {
  const m = FENCE_CLOSE.exec(line)
  return m !== null && m[1][0] === fence.char && m[1].length >= fence.length
}

/**
 * A line after a blank line starts a new top-level block for certain only if it is not indented (that
 * could be a list item's continuation or indented code) and is not a list item (a loose list goes on).
 */
function startsFreshBlock(line: string): boolean {
  return line.length > 0 && line[0] !== ' ' && line[0] !== '\t' && !LIST_ITEM.test(line)
}

/**
 * The length of the stable prefix of `source`: it ends just before the first line of the last block that
 * began after a blank line outside any code fence. `from` must be 0 or an earlier result for a prefix of
 * the same text (scanning resumes there, as those points are never inside a fence).
 */
export function stableLength(source: string, from = 0): number {
  let fence: Fence | null = null
  let afterBlank = false
  let stable = from
  let pos = from
  while (pos < source.length) {
    const end = source.indexOf('\n', pos)
    if (end === -1) break // The last line is still being written: it decides nothing yet.
    const line = source.slice(pos, end).replace(/\r$/, '')
    if (fence !== null) {
      if (closesFence(line, fence)) fence = null
    } else if (BLANK.test(line)) {
      afterBlank = true
    } else {
      if (afterBlank && startsFreshBlock(line)) stable = pos
      afterBlank = false
      fence = openFence(line)
    }
    pos = end + 1
  }
  return stable
}

export interface SplitSource {
  stable: string
  tail: string
}

export function splitStable(source: string): SplitSource {
  const at = stableLength(source)
  return { stable: source.slice(0, at), tail: source.slice(at) }
}
