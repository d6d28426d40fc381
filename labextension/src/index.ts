import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-walnut:plugin',
  description: 'Walnut compute marketplace.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    console.log('jupyter-walnut activated');
  }
};

export default plugin;
