/**
 * The code the **Insert code** button puts into a notebook: a `%%rds --mock --on NODE` cell
 * that queries the selected dataset, preceded, when the cells above it lack them, by the lines
 * that import rds, load the magics and connect the saved node (its token stays in the saved
 * connections file: `%rds connect --name NODE` reads it from there).
 */
import { IColumn } from './api';

/** Privacy loss of the example release: small, so a real run would cost little. */
const EPSILON = 0.1;

/**
 * A `%%rds --mock` cell for `dataset` on node `node`.
 *
 * It counts the rows, grouped by the first category column (public keys) when there is one,
 * and averages the first bounded numeric column that has no nulls, so it runs as it is on
 * any schema. In mock mode it runs locally on mock data: nothing is sent, nothing is spent.
 * The magic binds each dataset under its own name (`patients`).
 */
export function snippetFor(node: string, dataset: string, columns: IColumn[]): string {
  const aggregates = ['rds.count()'];
  const numeric = columns.find(
    c => (c.type === 'int' || c.type === 'float') && c.bounds && !c.nullable
  );
  if (numeric) {
    aggregates.push(`rds.mean(${pyString(numeric.name)})`);
  }
  const category = columns.find(c => c.type === 'category' && c.categories?.length);
  const groupBy = category ? `.group_by(${pyString(category.name)})` : '';
  return [
    `%%rds --mock --on ${node}`,
    `# ${dataset} on ${node}: runs on its mock data (free); drop --mock to release for real.`,
    `${dataset}${groupBy}.agg(${aggregates.join(', ')}).release(epsilon=${EPSILON})`
  ].join('\n');
}

/**
 * The set-up lines the snippet for `node` needs and `sources` do not have yet, as one cell;
 * null when nothing is missing. `sources` is the code that runs before the snippet: the code
 * cells above the insertion point, not the whole notebook (a later cell runs too late).
 */
export function setupFor(node: string, sources: string[]): string | null {
  const code = sources.join('\n');
  const lines: string[] = [];
  if (!/^\s*import\s+rds_kernel\s+as\s+rds\s*$/m.test(code)) {
    lines.push('import rds_kernel as rds');
  }
  if (!/^\s*%load_ext\s+rds_kernel\s*$/m.test(code)) {
    lines.push('%load_ext rds_kernel');
  }
  const name = node.replace(/[.-]/g, '\\$&');
  const connects = new RegExp(`^\\s*%rds\\s+connect\\b.*(--name|-n)[\\s=]+${name}(\\s|$)`, 'm');
  if (!connects.test(code)) {
    lines.push(`%rds connect --name ${node}`);
  }
  return lines.length ? lines.join('\n') : null;
}

function pyString(text: string): string {
  return JSON.stringify(text);
}
