// The daemon's session history API (docs/protocol.md, "Session history API").
import type { StoredTurn } from '../chat/store'

export interface SessionSummary {
  id: string
  title: string
  createdAt: string
  updatedAt: string
  turnCount: number
}

export interface SessionDetail extends SessionSummary {
  turns: StoredTurn[]
}

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string) {
    super(`${status} ${code}`)
  }
}

type Raw = Record<string, unknown>

async function request(path: string, init?: RequestInit): Promise<Response> {
  const response = await fetch(path, { cache: 'no-store', ...init })
  if (!response.ok) {
    let code = 'http_error'
    try {
      const body = (await response.json()) as { error?: { code?: unknown } }
      if (typeof body.error?.code === 'string') code = body.error.code
    } catch {
      // not JSON: keep the generic code
    }
    throw new ApiError(response.status, code)
  }
  return response
}

function summary(raw: Raw): SessionSummary {
  return {
    id: String(raw.id ?? ''),
    title: typeof raw.title === 'string' ? raw.title : '',
    createdAt: String(raw.created_at ?? ''),
    updatedAt: String(raw.updated_at ?? raw.created_at ?? ''),
    turnCount: typeof raw.turn_count === 'number' ? raw.turn_count : 0,
  }
}

function turn(raw: Raw): StoredTurn {
  return {
    role: raw.role === 'user' ? 'user' : 'assistant',
    content: typeof raw.content === 'string' ? raw.content : '',
    status: typeof raw.status === 'string' ? raw.status : 'complete',
  }
}

export async function listSessions(limit = 100): Promise<SessionSummary[]> {
  const body = (await (await request(`/api/sessions?limit=${limit}&offset=0`)).json()) as { sessions?: Raw[] }
  return (body.sessions ?? []).map(summary).filter((s) => s.id !== '')
}

export async function getSession(id: string): Promise<SessionDetail> {
  const body = (await (await request(`/api/sessions/${encodeURIComponent(id)}`)).json()) as Raw
  const turns = Array.isArray(body.turns) ? (body.turns as Raw[]).map(turn) : []
  return { ...summary(body), turns }
}

export async function deleteSession(id: string): Promise<void> {
  await request(`/api/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' })
}
