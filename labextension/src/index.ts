/**
 * rds_kernel's JupyterLab sidebar: a dataset browser in the left area.
 *
 * It lists the nodes saved in the scientist's connections file with their datasets and
 * budgets (served by the `rds_kernel.jupyter.server` extension), and inserts a ready
 * `%%rds --mock` cell into the active notebook. It refreshes on its button, after a notebook
 * cell using rds finishes (a release may have spent budget), and every minute while shown.
 */
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { KernelMessage } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';

import { IDatasetDetail, RdsApi } from './api';
import { DatasetBrowser } from './browser';
import { setupFor, snippetFor } from './snippet';

/** The panel's DOM id and sidebar tab `data-id` (the browser tests use it). */
const PANEL_ID = 'rds-dataset-browser';
const POLL_MS = 60_000;
/** Code that may have spent budget: the magics, the module, or a release call. */
const USES_RDS = /%%?rds\b|rds_kernel|\.release\(/;

const databaseIcon = new LabIcon({
  name: 'rds-kernel:database',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="#616161"><path d="M12 2C7.6 2 4 3.3 4 5v14c0 1.7 3.6 3 8 3s8-1.3 ' +
    '8-3V5c0-1.7-3.6-3-8-3zm0 2c3.9 0 6 1.1 6 1s-2.1 1-6 1-6-1.1-6-1 2.1-1 6-1zm6 15c0 .3-2.1 ' +
    '1-6 1s-6-.7-6-1v-2.3c1.5.8 3.6 1.3 6 1.3s4.5-.5 6-1.3zm0-5c0 .3-2.1 1-6 1s-6-.7-6-1v-2.3c1.5' +
    '.8 3.6 1.3 6 1.3s4.5-.5 6-1.3zm0-5c0 .3-2.1 1-6 1s-6-.7-6-1V6.7C7.5 7.5 9.6 8 12 8s4.5-.5 ' +
    '6-1.3z"/></g></svg>'
});

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'rds-kernel:dataset-browser',
  description: 'Browse rds_kernel owner nodes, their datasets and your privacy budget.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILabShell, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    labShell: ILabShell | null,
    restorer: ILayoutRestorer | null
  ) => {
    const browser = new DatasetBrowser({
      api: new RdsApi(app.serviceManager.serverSettings),
      insert: detail => insertSnippet(app, tracker, detail)
    });
    browser.id = PANEL_ID;
    browser.title.icon = databaseIcon;
    browser.title.caption = 'RDS datasets';
    app.shell.add(browser, 'left', { rank: 450 });
    restorer?.add(browser, PANEL_ID);

    let loaded = false;
    const refreshIfShown = () => {
      if (browser.isVisible) {
        loaded = true;
        void browser.refresh();
      }
    };
    // Load on first show rather than at start-up: asking nodes takes a moment.
    labShell?.layoutModified.connect(() => {
      if (!loaded) {
        refreshIfShown();
      }
    });
    if (!labShell) {
      void browser.refresh();
    }
    window.setInterval(refreshIfShown, POLL_MS);
    followReleases(tracker, () => {
      loaded = false;
      refreshIfShown();
    });
  }
};

/**
 * Call `refresh` when a notebook cell whose code uses rds has finished running.
 *
 * The kernel echoes every executed cell as `execute_input` on IOPub and reports `idle` when
 * done, whichever notebook or command ran it, so this follows releases made from any notebook.
 */
function followReleases(tracker: INotebookTracker, refresh: () => void): void {
  const watch = (panel: NotebookPanel) => {
    let pending = false;
    panel.sessionContext.iopubMessage.connect((_, msg) => {
      if (KernelMessage.isExecuteInputMsg(msg)) {
        pending ||= USES_RDS.test(msg.content.code);
      } else if (
        pending &&
        KernelMessage.isStatusMsg(msg) &&
        msg.content.execution_state === 'idle'
      ) {
        pending = false;
        refresh();
      }
    });
  };
  tracker.forEach(watch);
  tracker.widgetAdded.connect((_, panel) => watch(panel));
}

/**
 * Insert the dataset's snippet below the active cell of the active notebook (a new notebook
 * when none is open), preceded by a set-up cell with whatever the cells above still lack, and
 * select the first inserted cell, so that Shift+Enter, Shift+Enter runs them in order.
 *
 * Only the cells above the insertion point count: they are the ones that run before the new
 * cells. An `import` further down runs too late (NameError), and so does a `%load_ext` (`Cell
 * magic %%rds not found`). The set-up cannot share the snippet's cell: `%%rds` must be the
 * first line of its cell.
 */
async function insertSnippet(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  detail: IDatasetDetail
): Promise<void> {
  let panel = tracker.currentWidget;
  if (!panel) {
    panel = (await app.commands.execute('notebook:create-new', {
      kernelName: app.serviceManager.kernelspecs.specs?.default ?? 'python3'
    })) as NotebookPanel;
  }
  await panel.context.ready;
  const notebook = panel.content;
  const model = notebook.model;
  if (!model) {
    throw new Error('the notebook has no model yet; try again');
  }
  const cells = model.sharedModel.cells;
  const activeIndex = Math.min(Math.max(notebook.activeCellIndex, 0), cells.length - 1);
  const above = cells
    .slice(0, activeIndex + 1)
    .filter(c => c.cell_type === 'code')
    .map(c => c.getSource());
  const code = [snippetFor(detail.node, detail.name, detail.columns)];
  const setup = setupFor(detail.node, above);
  if (setup) {
    code.unshift(setup);
  }
  // A fresh notebook has one empty cell: fill it rather than leave a blank cell on top.
  const active = cells[activeIndex];
  let first = activeIndex + 1;
  if (active && active.cell_type === 'code' && active.getSource().trim() === '') {
    active.setSource(code.shift() as string);
    first = activeIndex;
  }
  if (code.length) {
    model.sharedModel.insertCells(
      activeIndex + 1,
      code.map(source => ({ cell_type: 'code', source, metadata: {} }))
    );
  }
  notebook.deselectAll();
  notebook.activeCellIndex = first;
  app.shell.activateById(panel.id);
  notebook.activeCell?.node.scrollIntoView({ block: 'nearest' });
}

export default plugin;
