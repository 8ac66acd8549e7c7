/**
 * Calls to the server extension (`rds_kernel/jupyter/server`) under `{baseUrl}/rds-kernel/`.
 *
 * The server holds the tokens and asks the nodes; the browser only ever sees what it returns:
 * names, URLs, statuses, public schemas, mock rows and budgets. A token goes one way only,
 * in `addNode`, from the password field to the server.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/**
 * One budget scope: total, spent and remaining privacy loss. The node's own record,
 * `rds_kernel.wire.BudgetLine`, field for field (tests/sidebar/test_api_types.py checks it).
 */
export interface IBudgetLine {
  epsilon_total: number;
  epsilon_spent: number;
  epsilon_remaining: number;
  delta_total: number;
  delta_spent: number;
  delta_remaining: number;
}

/**
 * Your budget on a node: the node-wide line and the caps the owner set for you on single
 * datasets. The node's own record, `rds_kernel.wire.Budget`, field for field.
 */
export interface IBudget extends IBudgetLine {
  user: string;
  per_dataset: Record<string, IBudgetLine>;
}

export type NodeStatus = 'ok' | 'unreachable' | 'error';

export interface INode {
  /** The connection's name: how notebooks refer to the node (`%%rds --on NAME`). */
  name: string;
  url: string;
  status: NodeStatus;
  /** Why the node could not be asked (null when `status` is ok). */
  message: string | null;
  /** The name the node gives itself. */
  node_name: string | null;
  user: string | null;
  datasets: string[];
  budget: IBudget | null;
}

export interface IColumn {
  name: string;
  type: string;
  nullable: boolean;
  bounds?: [number | string, number | string];
  categories?: string[];
  description?: string;
}

export interface IDatasetDetail {
  node: string;
  name: string;
  description: string;
  public_row_count: number | null;
  identifier: string | null;
  columns: IColumn[];
  mock: { columns: string[]; rows: unknown[][]; total_rows: number };
}

/** An error the server extension answered with (`{"error": {"code", "message"}}`). */
/** The error envelope every rds-kernel handler answers with. */
interface IErrorEnvelope {
  error?: { code?: unknown; message?: unknown };
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly status: number
  ) {
    super(message);
  }
}

export class RdsApi {
  constructor(private readonly settings: ServerConnection.ISettings) {}

  async nodes(): Promise<INode[]> {
    const body = await this.request<{ nodes: INode[] }>('nodes');
    return body.nodes;
  }

  dataset(node: string, dataset: string): Promise<IDatasetDetail> {
    return this.request<IDatasetDetail>(
      URLExt.join('nodes', encodeURIComponent(node), 'datasets', encodeURIComponent(dataset))
    );
  }

  addNode(name: string, url: string, token: string): Promise<INode> {
    return this.request<INode>('nodes', {
      method: 'POST',
      body: JSON.stringify({ name, url, token })
    });
  }

  async removeNode(name: string): Promise<void> {
    await this.request<null>(URLExt.join('nodes', encodeURIComponent(name)), {
      method: 'DELETE'
    });
  }

  private async request<T>(path: string, init: RequestInit = {}): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'rds-kernel', path);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      throw new ServerConnection.NetworkError(error as TypeError);
    }
    const text = await response.text();
    let body: unknown = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = null;
      }
    }
    if (!response.ok) {
      const error = (body as IErrorEnvelope | null)?.error;
      const message =
        typeof error?.message === 'string'
          ? error.message
          : `the server answered HTTP ${response.status}`;
      const code = typeof error?.code === 'string' ? error.code : 'error';
      throw new ApiError(message, code, response.status);
    }
    return body as T;
  }
}
