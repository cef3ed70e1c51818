// Checks a Chrome Trace Event JSON against what makes Perfetto's JSON importer complain or mis-draw
// (json_trace_tokenizer.cc, json_trace_parser_impl.cc, flow_tracker.cc): a displayTimeUnit (Perfetto rescales
// every ts by it), unknown top-level keys before traceEvents (it stops there), missing fields per phase, unnamed processes and
// threads, timestamps going backwards on a thread, X slices that overlap without nesting on one thread
// (Perfetto moves them to an overflow track), async b/e that do not pair on (pid, cat, id, name), flows whose
// start is missing, duplicated, or later than an end (flow_end_without_start), v1 flow events with no enclosing
// slice (flow_no_enclosing_slice), and non-numeric counter values (json_parser_failure).
// Used by the tests, and usable on any trace.json (`validateChromeTrace(JSON.parse(text))`).

export interface ValidationResult {
  errors: string[];
  stats: {
    events: number;
    byPhase: Record<string, number>;
    processes: number;
    threads: number;
    asyncPairs: number;
    flows: number;
    flowArrows: number;
  };
}

interface Ev {
  name?: unknown;
  ph?: unknown;
  pid?: unknown;
  tid?: unknown;
  ts?: unknown;
  dur?: unknown;
  cat?: unknown;
  id?: unknown;
  id2?: { local?: unknown; global?: unknown };
  bind_id?: unknown;
  flow_in?: unknown;
  flow_out?: unknown;
  bp?: unknown;
  s?: unknown;
  args?: unknown;
}

const PHASES = new Set(['M', 'X', 'B', 'E', 'b', 'e', 'n', 'C', 'i', 'I', 'R', 's', 't', 'f']);
const MAX_ERRORS = 50;

/** µs → integer ns, the resolution the exporter writes. */
const ns = (us: number) => Math.round(us * 1000);

export function validateChromeTrace(trace: unknown): ValidationResult {
  const errors: string[] = [];
  const err = (m: string) => {
    if (errors.length < MAX_ERRORS) errors.push(m);
    else if (errors.length === MAX_ERRORS) errors.push('… more errors omitted');
  };
  const root = trace as { traceEvents?: unknown; displayTimeUnit?: unknown };
  const events: Ev[] = Array.isArray(trace)
    ? (trace as Ev[])
    : Array.isArray(root?.traceEvents)
      ? (root.traceEvents as Ev[])
      : [];
  if (events.length === 0) err('no traceEvents');
  if (root && !Array.isArray(trace) && root.displayTimeUnit !== undefined) {
    err(
      `displayTimeUnit ${JSON.stringify(root.displayTimeUnit)}: Perfetto reads every ts in this unit (not only for display); leave it out for µs`,
    );
  }
  if (root && !Array.isArray(trace)) {
    const known = new Set(['traceEvents', 'systemTraceEvents', 'metadata', 'displayTimeUnit', 'otherData']);
    const keys = Object.keys(root);
    const firstUnknown = keys.findIndex((k) => !known.has(k));
    if (firstUnknown >= 0 && firstUnknown < keys.indexOf('traceEvents')) {
      err(
        `top-level key "${keys[firstUnknown]}" before traceEvents: Perfetto stops reading at the first key it does not know`,
      );
    }
  }

  const byPhase: Record<string, number> = {};
  const processNames = new Set<number>();
  const threadNames = new Set<string>();
  const usedPids = new Set<number>();
  const usedThreads = new Set<string>();
  const lastTs = new Map<string, number>();
  const threadStacks = new Map<string, number[]>(); // open X ends (ns) per thread
  const threadSpans = new Map<string, [number, number][]>(); // X spans per thread, for v1 flow binding
  const openAsync = new Map<string, number>();
  let asyncPairs = 0;
  const flowSrc = new Map<number, number>(); // bind_id → ts of flow_out
  const flowIn = new Map<number, number[]>();
  const v1 = new Map<string, { s: number; f: number }>();
  const v1Binds: { thread: string; t: number; what: string }[] = [];

  events.forEach((e, i) => {
    const where = `event ${i} (${String(e.ph)} ${String(e.name)})`;
    const ph = e.ph;
    if (typeof ph !== 'string' || !PHASES.has(ph)) return err(`${where}: unknown phase`);
    byPhase[ph] = (byPhase[ph] ?? 0) + 1;
    if (typeof e.pid !== 'number' || !Number.isInteger(e.pid)) return err(`${where}: pid must be an integer`);
    const pid = e.pid;
    const thread = `${pid}/${String(e.tid)}`;
    if (ph === 'M') {
      const name = (e.args as { name?: unknown } | undefined)?.name;
      if (e.name === 'process_name') {
        if (typeof name !== 'string') err(`${where}: process_name without args.name`);
        processNames.add(pid);
      } else if (e.name === 'thread_name') {
        if (typeof name !== 'string' || typeof e.tid !== 'number') err(`${where}: thread_name needs tid and args.name`);
        threadNames.add(thread);
      }
      return;
    }
    if (typeof e.ts !== 'number' || !Number.isFinite(e.ts) || e.ts < 0)
      return err(`${where}: ts must be a finite number ≥ 0 (µs)`);
    if (typeof e.name !== 'string' && ph !== 'e' && ph !== 'E') err(`${where}: name must be a string`);
    usedPids.add(pid);
    const t = ns(e.ts);
    const orderKey =
      ph === 'b' || ph === 'e' || ph === 'n' ? `async ${pid}/${String(e.cat)}/${asyncId(e)}` : `thread ${thread}`;
    const prev = lastTs.get(orderKey);
    if (prev !== undefined && t < prev) err(`${where}: ts ${e.ts} goes back on ${orderKey} (previous ${prev / 1000})`);
    lastTs.set(orderKey, t);

    switch (ph) {
      case 'X': {
        if (typeof e.tid !== 'number') return err(`${where}: X needs a numeric tid`);
        if (typeof e.dur !== 'number' || !Number.isFinite(e.dur) || e.dur < 0) return err(`${where}: X needs dur ≥ 0`);
        usedThreads.add(thread);
        const end = t + ns(e.dur);
        let st = threadStacks.get(thread);
        if (!st) threadStacks.set(thread, (st = []));
        while (st.length > 0 && st[st.length - 1]! <= t) st.pop();
        if (st.length > 0 && end > st[st.length - 1]!) {
          err(
            `${where}: overlaps the enclosing slice on thread ${thread} without nesting (ends ${end / 1000} after ${st[st.length - 1]! / 1000})`,
          );
        }
        st.push(end);
        let spans = threadSpans.get(thread);
        if (!spans) threadSpans.set(thread, (spans = []));
        spans.push([t, end]);
        checkV2(e, t, where);
        break;
      }
      case 'b':
      case 'e': {
        const id = asyncId(e);
        if (id === '') return err(`${where}: async event without id/id2`);
        const key = `${pid}/${String(e.cat)}/${id}/${String(e.name)}`;
        if (ph === 'b') {
          if (openAsync.has(key)) err(`${where}: async slice ${key} begun twice without an end`);
          openAsync.set(key, t);
          checkV2(e, t, where);
        } else {
          const b = openAsync.get(key);
          if (b === undefined) err(`${where}: async end without a begin (${key})`);
          else if (t < b) err(`${where}: async end before its begin (${key})`);
          else asyncPairs++;
          openAsync.delete(key);
        }
        break;
      }
      case 'C': {
        const a = e.args as Record<string, unknown> | undefined;
        if (!a || typeof a !== 'object') err(`${where}: counter without args`);
        else
          for (const [k, v] of Object.entries(a))
            if (typeof v !== 'number' || !Number.isFinite(v)) err(`${where}: counter series ${k} is not a number`);
        break;
      }
      case 'i':
      case 'I':
        if (e.s !== undefined && e.s !== 'g' && e.s !== 'p' && e.s !== 't')
          err(`${where}: instant scope must be g, p or t`);
        break;
      case 's':
      case 'f':
      case 't': {
        const key = `${String(e.cat)}/${String(e.name)}/${String(e.id)}`;
        let f = v1.get(key);
        if (!f) v1.set(key, (f = { s: 0, f: 0 }));
        if (ph === 's') f.s++;
        if (ph === 'f') f.f++;
        v1Binds.push({ thread, t, what: where });
        break;
      }
    }
  });

  function checkV2(e: Ev, t: number, where: string) {
    if (e.bind_id === undefined) return;
    if (typeof e.bind_id !== 'number') return err(`${where}: bind_id must be numeric`);
    if (e.flow_out && e.flow_in) return; // a step: both ends
    if (e.flow_out) {
      if (flowSrc.has(e.bind_id)) err(`${where}: flow ${e.bind_id} has two sources`);
      flowSrc.set(e.bind_id, t);
    } else if (e.flow_in) {
      let a = flowIn.get(e.bind_id);
      if (!a) flowIn.set(e.bind_id, (a = []));
      a.push(t);
    } else err(`${where}: bind_id without flow_in/flow_out (flow_without_direction)`);
  }

  for (const k of openAsync.keys()) err(`async slice ${k} never ends`);
  let flowArrows = 0;
  for (const [id, ts] of flowSrc) {
    const ins = flowIn.get(id);
    if (!ins || ins.length === 0) err(`flow ${id} starts but never ends`);
    else {
      for (const t of ins)
        if (t < ts) err(`flow ${id}: an end (ts ${t / 1000}) precedes its start (ts ${ts / 1000}); Perfetto drops it`);
      flowArrows += ins.length;
    }
  }
  for (const id of flowIn.keys()) if (!flowSrc.has(id)) err(`flow ${id} ends without a start`);
  for (const [k, f] of v1) {
    if (f.s !== 1) err(`flow v1 ${k}: ${f.s} starts (need exactly 1)`);
    if (f.f < 1) err(`flow v1 ${k}: no end`);
    flowArrows += f.f;
  }
  for (const b of v1Binds) {
    const spans = threadSpans.get(b.thread) ?? [];
    if (!spans.some(([s, e]) => s <= b.t && b.t <= e))
      err(`${b.what}: no enclosing slice on thread ${b.thread} (flow_no_enclosing_slice)`);
  }
  for (const p of usedPids) if (!processNames.has(p)) err(`pid ${p} has no process_name metadata`);
  for (const t of usedThreads) if (!threadNames.has(t)) err(`thread ${t} has no thread_name metadata`);

  return {
    errors,
    stats: {
      events: events.length,
      byPhase,
      processes: processNames.size,
      threads: threadNames.size,
      asyncPairs,
      flows: flowSrc.size + v1.size,
      flowArrows,
    },
  };
}

function asyncId(e: Ev): string {
  if (e.id !== undefined) return String(e.id);
  if (e.id2?.global !== undefined) return `g:${String(e.id2.global)}`;
  if (e.id2?.local !== undefined) return `l:${String(e.id2.local)}`;
  return '';
}
