// The session history drawer: its list (refreshed when opened and after each answer), switching to a stored
// conversation and deleting one.
//
// Whose conversations: the daemon shows a screen only its current visit's (the visit token goes with every
// request); an unlocked operator sees the whole archive. Between New customer and the daemon's new token the
// page holds no token and lists nothing. With `history_mode = "off"` the daemon stores nothing, so the list
// is this visit's conversations as kept in page memory (VisitMemory): the visitor can still go back to one,
// and a new visit forgets them all — nothing of an earlier visitor can be reached from the screen.
import { ref } from 'vue'
import type { StoredTurn } from './chat/store'
import { VisitMemory } from './chat/visitMemory'
import {
  ApiError, OPERATOR_HEADER, VISIT_HEADER, deleteSession, getSession, listSessions, type Auth, type SessionSummary,
} from './net/sessionsApi'
import type { Kiosk } from './useKiosk'
import type { Operator } from './useOperator'

export function useHistory(getKiosk: () => Kiosk, operator: Operator) {
  const open = ref(false)
  const sessions = ref<SessionSummary[]>([])
  const loading = ref(false)
  const failed = ref(false)
  /** The clock the "5 min ago" labels are computed from, taken with each fresh list. */
  const now = ref(Date.now())
  const memory = new VisitMemory()
  let latestRequest = 0
  let latestSwitch = 0

  /** Page memory instead of the daemon ("off" mode, unless the operator looks at the daemon's archive). */
  const inMemory = (): boolean => getKiosk().state.venue.historyMode === 'off' && operator.token.value === null

  function auth(): Auth | null {
    if (operator.token.value !== null) return { [OPERATOR_HEADER]: operator.token.value }
    const visit = getKiosk().state.visit
    return visit === null ? null : { [VISIT_HEADER]: visit }
  }

  async function fetchList(): Promise<SessionSummary[]> {
    if (inMemory()) return memory.list()
    const headers = auth()
    return headers === null ? [] : listSessions(headers)
  }

  async function refresh(): Promise<void> {
    const mine = ++latestRequest
    loading.value = sessions.value.length === 0
    try {
      const list = await fetchList()
      if (mine !== latestRequest) return // an older answer arriving late must not win
      sessions.value = list
      now.value = Date.now()
      failed.value = false
    } catch {
      if (mine === latestRequest) failed.value = true
    } finally {
      if (mine === latestRequest) loading.value = false
    }
  }

  /** An answer ended: remember it ("off" mode) and show the fresh list. */
  function answerEnded(): void {
    if (getKiosk().state.venue.historyMode === 'off') memory.record(getKiosk().state)
    void refresh()
  }

  /** A visit ended: nothing of it stays listed or remembered (a late answer for it is ignored too). */
  function forgetVisit(): void {
    latestRequest++
    latestSwitch++
    memory.clear()
    sessions.value = []
    loading.value = false
    failed.value = false
  }

  function toggle(): void {
    open.value = !open.value
    if (open.value) void refresh()
  }

  async function turnsOf(id: string): Promise<StoredTurn[]> {
    if (inMemory()) {
      const kept = memory.get(id)
      if (kept === null) throw new ApiError(404, 'not_found')
      return kept.turns
    }
    const headers = auth()
    if (headers === null) throw new ApiError(403, 'visit_required')
    return (await getSession(id, headers)).turns
  }

  async function show(id: string): Promise<boolean> {
    const mine = ++latestSwitch
    try {
      const turns = await turnsOf(id)
      if (mine !== latestSwitch) return false
      getKiosk().actions.showSession(id, turns)
      return true
    } catch (error) {
      if (mine !== latestSwitch) return false
      getKiosk().actions.notice('session_load_failed')
      if (error instanceof ApiError && error.status === 404) void refresh()
      return false
    }
  }

  async function removeStored(id: string): Promise<void> {
    if (inMemory()) return memory.remove(id)
    const headers = auth()
    if (headers === null) throw new ApiError(403, 'visit_required')
    await deleteSession(id, headers)
  }

  async function remove(id: string): Promise<void> {
    try {
      await removeStored(id)
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) {
        getKiosk().actions.notice('session_delete_failed')
        return
      }
    }
    sessions.value = sessions.value.filter((s) => s.id !== id)
    if (getKiosk().state.session === id) getKiosk().actions.newConversation()
    void refresh()
  }

  return { open, sessions, loading, failed, now, refresh, answerEnded, forgetVisit, toggle, show, remove }
}

export type History = ReturnType<typeof useHistory>
