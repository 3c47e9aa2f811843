// The session history drawer: its list (refreshed when opened and after each answer), switching to a stored
// conversation and deleting one.
import { ref } from 'vue'
import { ApiError, deleteSession, getSession, listSessions, type SessionSummary } from './net/sessionsApi'
import type { Kiosk } from './useKiosk'

export function useHistory(getKiosk: () => Kiosk) {
  const open = ref(false)
  const sessions = ref<SessionSummary[]>([])
  const loading = ref(false)
  const failed = ref(false)
  /** The clock the "5 min ago" labels are computed from, taken with each fresh list. */
  const now = ref(Date.now())
  let latestRequest = 0
  let latestSwitch = 0

  async function refresh(): Promise<void> {
    const mine = ++latestRequest
    loading.value = sessions.value.length === 0
    try {
      const list = await listSessions()
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

  function toggle(): void {
    open.value = !open.value
    if (open.value) void refresh()
  }

  async function show(id: string): Promise<boolean> {
    const mine = ++latestSwitch
    try {
      const detail = await getSession(id)
      if (mine !== latestSwitch) return false
      getKiosk().actions.showSession(id, detail.turns)
      return true
    } catch (error) {
      if (mine !== latestSwitch) return false
      getKiosk().actions.notice('session_load_failed')
      if (error instanceof ApiError && error.status === 404) void refresh()
      return false
    }
  }

  async function remove(id: string): Promise<void> {
    try {
      await deleteSession(id)
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

  return { open, sessions, loading, failed, now, refresh, toggle, show, remove }
}

export type History = ReturnType<typeof useHistory>
