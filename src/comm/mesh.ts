// DeviceMesh: one rank's named sub-communicators of a validated layout (mesh-layout.ts), built by `split` on the
// world. Every dim gets a communicator, degree-1 dims a size-1 group (so code above never special-cases "no
// group"), and the splits run in one fixed order on every rank, as split is collective over the world.

import { sumBytesByGroup } from './bytes.ts';
import type { ByteCounters, Communicator } from './communicator.ts';
import {
  batchShard,
  coordsOf,
  expertRange,
  groupOf,
  MESH_DIMS,
  planMesh,
  type MeshDim,
  type MeshLayout,
  type MeshOptions,
  type MeshView,
  type ParallelDegrees,
} from './mesh-layout.ts';

export * from './mesh-layout.ts';

export class DeviceMesh {
  private constructor(
    readonly world: Communicator,
    readonly layout: MeshLayout,
    private readonly groups: ReadonlyMap<MeshDim, Communicator>,
  ) {}

  /** Splits `world` into every group of `layout`; collective over the world. */
  static async build(world: Communicator, layout: MeshLayout): Promise<DeviceMesh> {
    if (world.size !== layout.worldSize) {
      throw new Error(
        `DeviceMesh: the layout is for ${layout.worldSize} ranks but the world communicator has ${world.size}; plan the mesh with the world's size`,
      );
    }
    const me = world.ranks[world.rank]!;
    const groups = new Map<MeshDim, Communicator>();
    for (const dim of MESH_DIMS) {
      const g = groupOf(layout, dim, world.rank);
      const comm = await world.split(g.index, g.ranks.indexOf(world.rank), dim);
      // The transport and the layout must agree on membership, or every later collective is wrong.
      const expected = g.ranks.map((r) => world.ranks[r]!);
      if (comm.ranks.join(',') !== expected.join(',')) {
        throw new Error(
          `DeviceMesh: split for ${dim} on rank ${me} gave ranks [${comm.ranks.join(',')}], the layout says [${expected.join(',')}]`,
        );
      }
      groups.set(dim, comm);
    }
    return new DeviceMesh(world, layout, groups);
  }

  /** This rank's world rank. */
  get rank(): number {
    return this.world.rank;
  }

  get(dim: MeshDim): Communicator {
    return this.groups.get(dim)!;
  }

  coords(view: MeshView): Record<string, number> {
    return coordsOf(this.layout, view, this.world.rank);
  }

  /** The experts this rank's ep shard owns: [start, end). */
  experts(numExperts: number): { start: number; end: number; local: number } {
    return expertRange(this.layout, this.world.rank, numExperts);
  }

  /** Which shard of the global batch this rank loads, out of how many. */
  get batch(): { index: number; degree: number } {
    return batchShard(this.layout, this.world.rank);
  }

  /** The world and every dim's communicator (for byte accounting, freeing). */
  communicators(): Communicator[] {
    return [this.world, ...this.groups.values()];
  }

  /** Bytes and calls per group name over the world and every dim. */
  bytesByGroup(): Record<string, ByteCounters> {
    return sumBytesByGroup(this.communicators());
  }

  async free(): Promise<void> {
    for (const c of this.groups.values()) await c.free();
  }
}

/** planMesh + DeviceMesh.build: validates (throwing MeshError) before any communication. */
export async function buildDeviceMesh(
  world: Communicator,
  degrees: Partial<ParallelDegrees>,
  opts: MeshOptions = {},
): Promise<DeviceMesh> {
  return DeviceMesh.build(world, planMesh(degrees, world.size, opts));
}
