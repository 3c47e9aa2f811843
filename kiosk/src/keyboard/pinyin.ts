// Pinyin -> Chinese word candidates for the on-screen keyboard.
//
// The index (one `word pin'yin` line per reading, most frequent first) is generated at build time by
// scripts/build-pinyin-index.mjs. A lookup offers, best first:
//   1. words whose full syllables spell the whole input (kaifang -> 开放),
//   2. words that spell the whole input with abbreviated syllables (tsg, tushug -> 图书馆),
//   3. words whose full syllables spell a leading part of it (woxiang -> 我想 ... then 我), longest first.
// Picking a candidate of kind 3 leaves the rest of the input to be converted next (segmentation).

export interface Candidate {
  word: string
  /** How many letters of the input the word stands for. */
  consumed: number
}

interface Entry {
  word: string
  syllables: string[]
  rank: number
}

const WHOLE_EXACT = 0
const WHOLE_ABBREVIATED = 1
const LEADING = 2

interface Match {
  consumed: number
  abbreviated: boolean
}

const INITIALS2 = ['zh', 'ch', 'sh']

/** The ways a syllable may be shortened when more input follows: its first letter or its zh/ch/sh initial. */
function shortForms(syllable: string): string[] {
  const two = syllable.slice(0, 2)
  return INITIALS2.includes(two) && syllable.length > 2 ? [two, syllable[0]!] : [syllable[0]!]
}

/** The longest way the syllables spell a prefix of input from pos; abbreviations only if they reach the end. */
function matchFrom(syllables: string[], i: number, input: string, pos: number): Match | null {
  if (i === syllables.length) return { consumed: pos, abbreviated: false }
  if (pos >= input.length) return null
  const syllable = syllables[i]!
  let best: Match | null = null
  if (input.startsWith(syllable, pos)) best = matchFrom(syllables, i + 1, input, pos + syllable.length)
  if (best && !best.abbreviated) return best
  const rest = input.slice(pos)
  if (i === syllables.length - 1 && syllable.startsWith(rest) && rest !== syllable) {
    return { consumed: input.length, abbreviated: true } // a partly typed last syllable: tushug
  }
  for (const form of shortForms(syllable)) {
    if (form === syllable || !input.startsWith(form, pos)) continue
    const next = matchFrom(syllables, i + 1, input, pos + form.length)
    if (next && next.consumed === input.length) return { consumed: next.consumed, abbreviated: true }
  }
  return best
}

function tierOf(match: Match, inputLength: number): number {
  if (match.consumed < inputLength) return match.abbreviated ? -1 : LEADING
  return match.abbreviated ? WHOLE_ABBREVIATED : WHOLE_EXACT
}

export function normalizePinyin(text: string): string {
  return text.toLowerCase().replace(/ü/g, 'v').replace(/[^a-z]/g, '')
}

export class PinyinIndex {
  private readonly byLetter = new Map<string, Entry[]>()

  constructor(data: string) {
    let rank = 0
    for (const line of data.split('\n')) {
      const space = line.indexOf(' ')
      if (space < 1) continue
      const syllables = line.slice(space + 1).split("'")
      const entry = { word: line.slice(0, space), syllables, rank: rank++ }
      const letter = syllables[0]![0]!
      const list = this.byLetter.get(letter) ?? []
      list.push(entry)
      this.byLetter.set(letter, list)
    }
  }

  /** Candidates for typed pinyin, best first, each word once; at most `limit`. */
  lookup(typed: string, limit = 200): Candidate[] {
    const input = normalizePinyin(typed)
    if (!input) return []
    const scored: { word: string; consumed: number; tier: number; rank: number }[] = []
    for (const entry of this.byLetter.get(input[0]!) ?? []) {
      const match = matchFrom(entry.syllables, 0, input, 0)
      if (!match) continue
      const tier = tierOf(match, input.length)
      if (tier >= 0) scored.push({ word: entry.word, consumed: match.consumed, tier, rank: entry.rank })
    }
    scored.sort((a, b) => a.tier - b.tier || b.consumed - a.consumed || a.rank - b.rank)
    const seen = new Set<string>()
    const out: Candidate[] = []
    for (const s of scored) {
      if (seen.has(s.word)) continue
      seen.add(s.word)
      out.push({ word: s.word, consumed: s.consumed })
      if (out.length >= limit) break
    }
    return out
  }
}

/** Splits candidates into pages of `size`. */
export function pageOf<T>(items: readonly T[], page: number, size: number): { items: T[]; pages: number } {
  const pages = Math.max(1, Math.ceil(items.length / size))
  const index = Math.min(Math.max(0, page), pages - 1)
  return { items: items.slice(index * size, index * size + size), pages }
}

let loading: Promise<PinyinIndex> | null = null

/** The generated index, loaded on first use as its own chunk (about 250 kB gzip), then kept. */
export function loadPinyinIndex(): Promise<PinyinIndex> {
  loading ??= import('./generated/pinyinData').then((m) => new PinyinIndex(m.default))
  return loading
}
