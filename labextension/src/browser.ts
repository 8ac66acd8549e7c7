/**
 * The dataset browser: the left-sidebar panel listing nodes → datasets, each node's status and
 * budget, and the selected dataset's description, schema and mock preview.
 *
 * Everything shown comes from the server extension (see `api.ts`) and is written with
 * `textContent`, never as HTML: names and descriptions come from node owners.
 */
import { addIcon, closeIcon, refreshIcon, Toolbar, ToolbarButton } from '@jupyterlab/ui-components';
import { Panel, Widget } from '@lumino/widgets';

import { ApiError, IBudget, IColumn, IDatasetDetail, INode, RdsApi } from './api';
import { formatCell, formatDelta, formatEpsilon } from './numbers';

/** Fraction of the budget spent from which the bar turns orange, then red (as the meter). */
const WARNING_AT = 0.8;
const DANGER_AT = 0.95;

export interface IDatasetBrowserOptions {
  api: RdsApi;
  /** Called by the **Insert code** button with the dataset shown. */
  insert: (detail: IDatasetDetail) => Promise<void>;
}

interface ISelection {
  node: string;
  dataset: string;
}

export class DatasetBrowser extends Panel {
  constructor(options: IDatasetBrowserOptions) {
    super();
    this.api = options.api;
    this.insert = options.insert;
    this.addClass('rds-Browser');

    const toolbar = new Toolbar();
    toolbar.addClass('rds-Browser-toolbar');
    const title = new Widget();
    title.addClass('rds-Browser-title');
    title.node.textContent = 'RDS nodes';
    toolbar.addItem('title', title);
    toolbar.addItem('spacer', Toolbar.createSpacerItem());
    toolbar.addItem(
      'add',
      new ToolbarButton({
        icon: addIcon,
        tooltip: 'Connect a node',
        className: 'rds-AddNodeButton',
        onClick: () => this.toggleForm()
      })
    );
    toolbar.addItem(
      'refresh',
      new ToolbarButton({
        icon: refreshIcon,
        tooltip: 'Refresh nodes, datasets and budgets',
        className: 'rds-RefreshButton',
        onClick: () => void this.refresh()
      })
    );
    this.addWidget(toolbar);

    this.body = new Widget();
    this.body.addClass('rds-Browser-body');
    this.addWidget(this.body);
    this.form = this.buildForm();
    this.status = el('div', 'rds-Browser-status');
    this.list = el('ul', 'rds-NodeList');
    this.detail = el('div', 'rds-Detail');
    this.body.node.append(this.form, this.status, this.list, this.detail);
  }

  /** Ask the server again for the nodes (and the selected dataset). Overlapping calls are fine. */
  async refresh(): Promise<void> {
    const generation = ++this.generation;
    this.setBusy(true);
    try {
      const nodes = await this.api.nodes();
      if (generation !== this.generation) {
        return;
      }
      this.nodes = nodes;
      this.status.textContent = nodes.length
        ? ''
        : 'No node connected yet: connect one with + above, or with %rds connect in a notebook.';
      this.renderNodes();
      const still = this.selection && this.findNode(this.selection.node);
      if (this.selection && still?.datasets.includes(this.selection.dataset)) {
        await this.loadDetail(this.selection, false);
      } else {
        this.selection = null;
        this.detail.replaceChildren();
      }
    } catch (error) {
      if (generation === this.generation) {
        this.status.textContent = `Could not list the nodes: ${messageOf(error)}`;
      }
    } finally {
      if (generation === this.generation) {
        this.setBusy(false);
      }
    }
  }

  // ---------------------------------------------------------------- the node tree

  private renderNodes(): void {
    this.list.replaceChildren(...this.nodes.map(n => this.renderNode(n)));
  }

  private renderNode(node: INode): HTMLElement {
    const item = el('li', `rds-Node rds-mod-${node.status}`);
    item.dataset.node = node.name;
    const collapsed = this.collapsed.has(node.name);
    item.classList.toggle('rds-mod-collapsed', collapsed);

    const header = el('div', 'rds-Node-header');
    header.title = `${node.url}${node.user ? ` — you are ${node.user}` : ''}`;
    const caret = el('span', 'rds-Node-caret', collapsed ? '▸' : '▾');
    const dot = el('span', 'rds-Node-status');
    dot.title = STATUS_TEXT[node.status];
    const name = el('span', 'rds-Node-name', node.name);
    const user = el(
      'span',
      'rds-Node-user',
      node.user ? `as ${node.user}` : STATUS_TEXT[node.status]
    );
    const remove = el('button', 'rds-Node-remove jp-Button jp-mod-minimal');
    remove.title = `Forget the connection ${node.name} and its token`;
    closeIcon.element({ container: remove, height: '14px', width: '14px' });
    remove.addEventListener('click', event => {
      event.stopPropagation();
      void this.removeNode(node.name);
    });
    header.append(caret, dot, name, user, remove);
    header.addEventListener('click', () => {
      if (!this.collapsed.delete(node.name)) {
        this.collapsed.add(node.name);
      }
      this.renderNodes();
    });
    item.append(header);

    if (node.budget) {
      item.append(renderBudget(node.budget));
    }
    if (node.message) {
      item.append(el('div', 'rds-Node-message', node.message));
    }
    const datasets = el('ul', 'rds-DatasetList');
    for (const name of node.datasets) {
      const entry = el('li', 'rds-Dataset', name);
      entry.dataset.dataset = name;
      entry.tabIndex = 0;
      const selected = this.selection?.node === node.name && this.selection.dataset === name;
      entry.classList.toggle('jp-mod-selected', selected);
      const open = () => void this.loadDetail({ node: node.name, dataset: name }, true);
      entry.addEventListener('click', open);
      entry.addEventListener('keydown', event => {
        if (event.key === 'Enter') {
          open();
        }
      });
      datasets.append(entry);
    }
    if (node.status === 'ok' && node.datasets.length === 0) {
      datasets.append(el('li', 'rds-Dataset rds-mod-empty', 'no datasets'));
    }
    item.append(datasets);
    return item;
  }

  private findNode(name: string): INode | undefined {
    return this.nodes.find(n => n.name === name);
  }

  private async removeNode(name: string): Promise<void> {
    try {
      await this.api.removeNode(name);
    } catch (error) {
      this.status.textContent = `Could not remove ${name}: ${messageOf(error)}`;
      return;
    }
    await this.refresh();
  }

  // ---------------------------------------------------------------- the dataset detail

  private async loadDetail(selection: ISelection, showLoading: boolean): Promise<void> {
    this.selection = selection;
    this.renderNodes();
    const request = ++this.detailRequest;
    if (showLoading) {
      this.detail.replaceChildren(el('p', 'rds-Detail-loading', `Loading ${selection.dataset}…`));
    }
    try {
      const detail = await this.api.dataset(selection.node, selection.dataset);
      if (request === this.detailRequest) {
        this.renderDetail(detail);
      }
    } catch (error) {
      if (request === this.detailRequest) {
        this.detail.replaceChildren(
          el('p', 'rds-Detail-error', `Could not load ${selection.dataset}: ${messageOf(error)}`)
        );
      }
    }
  }

  private renderDetail(detail: IDatasetDetail): void {
    const heading = el('div', 'rds-Detail-heading');
    heading.append(
      el('h3', 'rds-Detail-title', detail.name),
      el('span', 'rds-Detail-node', `on ${detail.node}`)
    );
    const insert = el('button', 'rds-InsertButton jp-Button jp-mod-styled jp-mod-accept');
    insert.textContent = 'Insert code';
    insert.title = 'Insert a %%rds --mock cell querying this dataset into the active notebook';
    const feedback = el('span', 'rds-Detail-feedback');
    insert.addEventListener('click', () => {
      feedback.textContent = '';
      this.insert(detail).catch(error => {
        feedback.textContent = `Could not insert the code: ${messageOf(error)}`;
      });
    });

    const facts: string[] = [];
    if (detail.public_row_count !== null) {
      facts.push(`${detail.public_row_count} rows (public)`);
    }
    if (detail.identifier) {
      facts.push(`one person = one ${detail.identifier}`);
    }
    const parts: HTMLElement[] = [heading];
    if (detail.description) {
      parts.push(el('p', 'rds-Detail-description', detail.description));
    }
    if (facts.length) {
      parts.push(el('p', 'rds-Detail-facts', facts.join(' · ')));
    }
    const actions = el('div', 'rds-Detail-actions');
    actions.append(insert, feedback);
    parts.push(
      actions,
      el('h4', 'rds-Detail-section', 'Schema'),
      wrap(renderSchema(detail.columns)),
      el(
        'h4',
        'rds-Detail-section',
        `Mock preview (first ${detail.mock.rows.length} of ${detail.mock.total_rows} fake rows)`
      ),
      wrap(renderMock(detail))
    );
    this.detail.replaceChildren(...parts);
  }

  // ---------------------------------------------------------------- connecting a node

  private buildForm(): HTMLFormElement {
    const form = el('form', 'rds-AddNode');
    form.hidden = true;
    const name = input('text', 'name', 'Name, e.g. hospital_a');
    const url = input('url', 'url', 'URL, e.g. http://127.0.0.1:8765');
    const token = input('password', 'token', 'Token from the node owner');
    token.autocomplete = 'off';
    const error = el('div', 'rds-AddNode-error');
    const submit = el('button', 'jp-Button jp-mod-styled jp-mod-accept', 'Connect');
    submit.type = 'submit';
    const cancel = el('button', 'jp-Button jp-mod-styled jp-mod-reject', 'Cancel');
    cancel.type = 'button';
    cancel.addEventListener('click', () => this.toggleForm(false));
    const buttons = el('div', 'rds-AddNode-buttons');
    buttons.append(cancel, submit);
    form.append(name, url, token, error, buttons);
    form.addEventListener('submit', event => {
      event.preventDefault();
      error.textContent = '';
      submit.disabled = true;
      this.api
        .addNode(name.value.trim(), url.value.trim(), token.value)
        .then(() => {
          form.reset();
          this.toggleForm(false);
          return this.refresh();
        })
        .catch(reason => {
          error.textContent = messageOf(reason);
        })
        .finally(() => {
          token.value = '';
          submit.disabled = false;
        });
    });
    return form;
  }

  private toggleForm(show = this.form.hidden): void {
    this.form.hidden = !show;
    if (show) {
      (this.form.elements.namedItem('name') as HTMLInputElement).focus();
    } else {
      this.form.reset();
    }
  }

  private setBusy(busy: boolean): void {
    this.toggleClass('rds-mod-busy', busy);
  }

  private readonly api: RdsApi;
  private readonly insert: (detail: IDatasetDetail) => Promise<void>;
  private readonly body: Widget;
  private readonly form: HTMLFormElement;
  private readonly status: HTMLElement;
  private readonly list: HTMLElement;
  private readonly detail: HTMLElement;
  private readonly collapsed = new Set<string>();
  private nodes: INode[] = [];
  private selection: ISelection | null = null;
  private generation = 0;
  private detailRequest = 0;
}

const STATUS_TEXT: Record<INode['status'], string> = {
  ok: 'reachable',
  unreachable: 'unreachable',
  error: 'error'
};

function renderBudget(budget: IBudget): HTMLElement {
  const box = el('div', 'rds-Budget');
  const total = budget.epsilon_total;
  const spent = total > 0 ? budget.epsilon_spent / total : 1;
  const left = total > 0 ? Math.max(0, budget.epsilon_remaining / total) : 0;
  const level = spent >= DANGER_AT ? 'danger' : spent >= WARNING_AT ? 'warning' : 'ok';
  const bar = el('div', `rds-Budget-bar rds-mod-${level}`);
  bar.setAttribute('role', 'meter');
  bar.setAttribute('aria-valuemin', '0');
  bar.setAttribute('aria-valuemax', String(total));
  bar.setAttribute('aria-valuenow', String(budget.epsilon_remaining));
  const fill = el('div', 'rds-Budget-fill');
  fill.style.width = `${(left * 100).toFixed(1)}%`;
  bar.append(fill);
  box.append(bar);
  // One line per budget, each kept on one line (cut with an ellipsis, whole in its tooltip),
  // numbers written as the meter writes them.
  const lines = [`ε ${formatEpsilon(budget.epsilon_remaining)} left of ${formatEpsilon(total)}`];
  if (budget.delta_total > 0 || budget.delta_spent > 0) {
    lines.push(
      `δ ${formatDelta(budget.delta_remaining)} left of ${formatDelta(budget.delta_total)}`
    );
  }
  const text = el('div', 'rds-Budget-text');
  for (const line of lines) {
    const item = el('div', 'rds-Budget-line', line);
    item.title = line;
    text.append(item);
  }
  box.append(text);
  return box;
}

function renderSchema(columns: IColumn[]): HTMLElement {
  const table = el('table', 'rds-Schema');
  table.append(row('th', ['column', 'type', 'public bounds / categories']));
  for (const c of columns) {
    let domain = '';
    if (c.bounds) {
      domain = `${c.bounds[0]} … ${c.bounds[1]}`;
    } else if (c.categories) {
      domain = c.categories.join(', ');
    }
    const tr = row('td', ['', c.nullable ? `${c.type}?` : c.type, domain]);
    tr.dataset.column = c.name;
    const name = tr.cells[0];
    name.append(el('span', 'rds-Schema-name', c.name));
    if (c.description) {
      name.append(el('div', 'rds-Schema-doc', c.description));
    }
    if (c.nullable) {
      tr.cells[1].title = 'may be missing (null)';
    }
    table.append(tr);
  }
  return table;
}

function renderMock(detail: IDatasetDetail): HTMLElement {
  const { columns, rows } = detail.mock;
  // Numeric columns (every value present is a number) are aligned right, header included.
  const numeric = columns.map((_, i) => {
    const present = rows.map(r => r[i]).filter(v => v !== null && v !== undefined);
    return present.length > 0 && present.every(v => typeof v === 'number');
  });
  const table = el('table', 'rds-Mock');
  for (const tr of [row('th', columns), ...rows.map(values => row('td', values.map(formatCell)))]) {
    numeric.forEach((isNumber, i) => tr.cells[i]?.classList.toggle('rds-mod-number', isNumber));
    table.append(tr);
  }
  return table;
}

function row(cell: 'th' | 'td', values: string[]): HTMLTableRowElement {
  const tr = document.createElement('tr');
  tr.append(...values.map(v => el(cell, '', v)));
  return tr;
}

function wrap(table: HTMLElement): HTMLElement {
  const box = el('div', 'rds-TableWrap');
  box.append(table);
  return box;
}

function input(type: string, name: string, placeholder: string): HTMLInputElement {
  const field = el('input', 'jp-mod-styled rds-AddNode-field');
  field.type = type;
  field.name = name;
  field.placeholder = placeholder;
  field.setAttribute('aria-label', placeholder);
  field.required = true;
  return field;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function messageOf(error: unknown): string {
  if (error instanceof ApiError || error instanceof Error) {
    return error.message;
  }
  return String(error);
}
