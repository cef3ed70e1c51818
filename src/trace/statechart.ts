// Diagrams of XState v5 machines: Mermaid `stateDiagram-v2` (renders in GitHub markdown and docs) and Graphviz
// dot (for big machines). Both walk the machine's StateNode tree, so nested and parallel states, invoke done/error,
// delayed (`after`) and eventless (`always`) transitions and guards all appear as the machine defines them.
//
// Mermaid cannot draw a transition between states inside different composite states, so such a transition is
// drawn between the composites' ancestors that are siblings, and its label names the inner source and target.
// Graphviz can, so the dot output keeps every edge exact (clusters for compound states, lhead/ltail to compounds).

import type { AnyStateMachine, AnyStateNode } from 'xstate';

export interface Edge {
  source: AnyStateNode;
  target: AnyStateNode;
  label: string;
}

/**
 * "FORWARD", "done(route)", "error(route)", "after 100ms", "always". Invoked actors are named by their id, or by
 * their `src` when the id is XState's generated one ("0.demo.running.work").
 */
export function eventLabel(eventType: string, node?: AnyStateNode): string {
  let m: RegExpMatchArray | null;
  const actor = (id: string) => {
    if (!/^\d+\./.test(id)) return id;
    const src = node?.invoke.find((i) => i.id === id)?.src;
    return typeof src === 'string' ? src : id;
  };
  if ((m = eventType.match(/^xstate\.done\.actor\.(.+)$/))) return `done(${actor(m[1]!)})`;
  if ((m = eventType.match(/^xstate\.error\.actor\.(.+)$/))) return `error(${actor(m[1]!)})`;
  if ((m = eventType.match(/^xstate\.after\.([^.]+)\./))) return `after ${/^\d+$/.test(m[1]!) ? `${m[1]}ms` : m[1]}`;
  if (/^xstate\.done\.state\./.test(eventType)) return 'done';
  return eventType === '' ? 'always' : eventType;
}

function guardName(g: unknown): string | null {
  if (g === undefined || g === null) return null;
  if (typeof g === 'string') return g;
  if (typeof g === 'function') return g.name && g.name !== 'guard' ? g.name : 'guard';
  if (typeof g === 'object' && 'type' in (g as object)) return String((g as { type: unknown }).type);
  return 'guard';
}

const children = (n: AnyStateNode): AnyStateNode[] => Object.values(n.states) as AnyStateNode[];

/** Every transition with a target, in document order; targetless (action-only) transitions are not drawn. */
export function collectEdges(machine: AnyStateMachine): Edge[] {
  const edges: Edge[] = [];
  const visit = (n: AnyStateNode) => {
    const add = (
      eventType: string,
      ts: readonly { target?: readonly AnyStateNode[] | undefined; guard?: unknown }[] | undefined,
    ) => {
      for (const t of ts ?? []) {
        const g = guardName(t.guard);
        for (const target of t.target ?? [])
          edges.push({ source: n, target, label: `${eventLabel(eventType, n)}${g ? ` [${g}]` : ''}` });
      }
    };
    for (const [eventType, ts] of n.transitions) add(eventType, ts);
    add('', n.always);
    children(n).forEach(visit);
  };
  visit(machine.root);
  return edges;
}

// ---- Mermaid ------------------------------------------------------------------------------------------------

const MERMAID_RESERVED = new Set([
  'end',
  'state',
  'note',
  'class',
  'classdef',
  'direction',
  'click',
  'style',
  'as',
  'left',
  'right',
  'of',
]);

function mermaidId(n: AnyStateNode): string {
  const id = n.path.join('__').replace(/[^A-Za-z0-9_]/g, '_');
  return MERMAID_RESERVED.has(id.toLowerCase()) || /^\d/.test(id) || id === '' ? `s_${id}` : id;
}

const quote = (s: string) => s.replace(/"/g, "'");

/** Ancestors from the root's child down to n. */
function chain(n: AnyStateNode): AnyStateNode[] {
  const out: AnyStateNode[] = [];
  for (let c: AnyStateNode | undefined = n; c && c.parent; c = c.parent) out.unshift(c);
  return out;
}

export interface DiagramOptions {
  /** Diagram title (Mermaid front matter / dot graph label). Default: the machine id. */
  title?: string;
}

export function toMermaid(machine: AnyStateMachine, opts: DiagramOptions = {}): string {
  const byScope = new Map<AnyStateNode, string[]>();
  const scopeLines = (scope: AnyStateNode) => {
    let l = byScope.get(scope);
    if (!l) byScope.set(scope, (l = []));
    return l;
  };
  for (const e of collectEdges(machine)) {
    const a = chain(e.source);
    const b = chain(e.target);
    // A transition of the root itself (taken in every state, e.g. ABORT): Mermaid has no node for the root.
    if (a.length === 0) {
      scopeLines(machine.root).push(`note left of ${mermaidId(b[0] ?? e.target)}: ${quote(e.label)} from any state`);
      continue;
    }
    let k = 0;
    while (k < a.length && k < b.length && a[k] === b[k] && k < Math.min(a.length, b.length) - 1) k++;
    // a[k] and b[k] share a parent (the lowest common scope); draw between them.
    const src = a[Math.min(k, a.length - 1)]!;
    const dst = b[Math.min(k, b.length - 1)]!;
    const inner = src !== e.source || dst !== e.target ? ` (${e.source.key} → ${e.target.key})` : '';
    scopeLines(src.parent ?? machine.root).push(`${mermaidId(src)} --> ${mermaidId(dst)}: ${quote(e.label + inner)}`);
  }
  const out: string[] = [];
  const title = opts.title ?? machine.id;
  out.push('---', `title: ${quote(title)}`, '---', 'stateDiagram-v2');
  const block = (node: AnyStateNode, depth: number) => {
    const pad = '  '.repeat(depth);
    const kids = children(node);
    if (node.type === 'parallel') {
      kids.forEach((k, i) => {
        if (i > 0) out.push(`${pad}--`);
        declare(k, depth);
      });
    } else {
      if (node.type === 'compound') for (const t of node.initial.target) out.push(`${pad}[*] --> ${mermaidId(t)}`);
      for (const k of kids) declare(k, depth);
    }
    for (const l of byScope.get(node) ?? []) out.push(`${pad}${l}`);
    for (const k of kids) if (k.type === 'final') out.push(`${pad}${mermaidId(k)} --> [*]`);
  };
  const declare = (n: AnyStateNode, depth: number) => {
    const pad = '  '.repeat(depth);
    const id = mermaidId(n);
    if (id !== n.key) out.push(`${pad}state "${quote(n.key)}" as ${id}`);
    else if (!isCompound(n)) out.push(`${pad}${id}`);
    if (n.type === 'compound' || n.type === 'parallel') {
      out.push(`${pad}state ${id} {`);
      block(n, depth + 1);
      out.push(`${pad}}`);
    } else if (n.type === 'history') out.push(`${pad}note right of ${id}: history (${n.history || 'shallow'})`);
  };
  block(machine.root, 1);
  return out.join('\n') + '\n';
}

// ---- Graphviz dot -------------------------------------------------------------------------------------------

const dq = (s: string) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
const nodeId = (n: AnyStateNode) => dq(n.path.join('.') || '(root)');
const initId = (n: AnyStateNode) => dq(`${n.path.join('.')}::init`);
const clusterId = (n: AnyStateNode) => dq(`cluster_${n.path.join('.')}`);
const isCompound = (n: AnyStateNode) => n.type === 'compound' || n.type === 'parallel';

export function toDot(machine: AnyStateMachine, opts: DiagramOptions = {}): string {
  const out: string[] = [];
  out.push(`digraph ${dq(machine.id)} {`);
  out.push(`  label=${dq(opts.title ?? machine.id)}; labelloc=t; compound=true; rankdir=LR;`);
  out.push('  node [shape=box, style=rounded, fontname="Helvetica", fontsize=11];');
  out.push('  edge [fontname="Helvetica", fontsize=9];');
  const body = (node: AnyStateNode, depth: number) => {
    const pad = '  '.repeat(depth);
    // Every compound gets an entry point: the target of edges into it, and the start of its initial arrow.
    out.push(`${pad}${initId(node)} [shape=point, width=0.08];`);
    if (node.type === 'compound') {
      for (const t of node.initial.target)
        out.push(
          `${pad}${initId(node)} -> ${isCompound(t) ? initId(t) : nodeId(t)}${isCompound(t) ? ` [lhead=${clusterId(t)}]` : ''};`,
        );
    }
    for (const k of children(node)) {
      if (isCompound(k)) {
        out.push(`${pad}subgraph ${clusterId(k)} {`);
        out.push(
          `${pad}  label=${dq(k.type === 'parallel' ? `${k.key} (parallel)` : k.key)}; style=${k.type === 'parallel' ? '"rounded,dashed"' : 'rounded'};`,
        );
        body(k, depth + 1);
        out.push(`${pad}}`);
      } else {
        const attrs = [`label=${dq(k.key)}`];
        if (k.type === 'final') attrs.push('peripheries=2');
        if (k.type === 'history') attrs.push('shape=circle', `label=${dq('H')}`);
        out.push(`${pad}${nodeId(k)} [${attrs.join(', ')}];`);
      }
    }
  };
  body(machine.root, 1);
  for (const e of collectEdges(machine)) {
    const a: string[] = [`label=${dq(e.label)}`];
    const from = isCompound(e.source) ? initId(e.source) : nodeId(e.source);
    const to = isCompound(e.target) ? initId(e.target) : nodeId(e.target);
    if (isCompound(e.source)) a.push(`ltail=${clusterId(e.source)}`);
    if (isCompound(e.target) && e.target !== e.source) a.push(`lhead=${clusterId(e.target)}`);
    out.push(`  ${from} -> ${to} [${a.join(', ')}];`);
  }
  out.push('}');
  return out.join('\n') + '\n';
}
