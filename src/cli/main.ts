// moe-actors command line. Commands are added as the layers they drive land.
export async function main(argv: string[]): Promise<void> {
  console.error(`moe-actors: no commands yet (got: ${argv.join(' ')})`);
  process.exitCode = 2;
}
