// With `history_mode = "off"` the daemon keeps nothing: this visit's conversations live only here, in page
// memory, so the visitor can still go back to one; a new visit forgets them all.
import type { SessionDetail, SessionSummary } from '../net/sessionsApi'
import type { StoredTurn } from './store'
import type { ChatState } from './types'

const TITLE_CHARS = 60

export class VisitMemory {
  private conversations = new Map<string, SessionDetail>()

  /** Remembers the screen's conversation as it is now (finished messages only). */
  record(state: ChatState): void {
    if (state.session === null) return
    const turns: StoredTurn[] = []
    for (const item of state.items) {
      if (item.kind !== 'message' || item.state === 'streaming') continue
      turns.push({ role: item.role, content: item.text, status: item.state === 'done' ? 'complete' : 'interrupted' })
    }
    if (turns.length === 0) return
    const first = turns.find((t) => t.role === 'user')?.content ?? ''
    const at = new Date().toISOString()
    const known = this.conversations.get(state.session)
    this.conversations.set(state.session, {
      id: state.session, title: first.slice(0, TITLE_CHARS), createdAt: known?.createdAt ?? at, updatedAt: at,
      turnCount: turns.length, turns,
    })
  }

  list(): SessionSummary[] {
    return [...this.conversations.values()]
      .sort((a, b) => b.updatedAt.localeCompare(a.updatedAt))
      .map(({ turns: _turns, ...summary }) => summary)
  }

  get(id: string): SessionDetail | null {
    return this.conversations.get(id) ?? null
  }

  remove(id: string): void {
    this.conversations.delete(id)
  }

  clear(): void {
    this.conversations.clear()
  }
}
