import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">
  <g class="jp-icon3" fill="#616161">
    <path d="M12 2.5c-4.4 0-8 3.6-8 8.6C4 16.9 7.6 21.5 12 21.5s8-4.6 8-10.4c0-5-3.6-8.6-8-8.6zm0 1.7c.6 0 1 .4 1 1v13.6c0 .6-.4 1-1 1s-1-.4-1-1V5.2c0-.6.4-1 1-1z"/>
    <path d="M7.3 9.2c.9-.3 1.7.5 1.5 1.4-.2.7-.9 1-1.5.8-.7-.2-1-1-.7-1.6.1-.3.4-.5.7-.6zm9.4 0c.9.3 1.1 1.3.5 1.9-.5.5-1.3.4-1.7-.2-.5-.8.2-1.9 1.2-1.7zM8 14.3c.8.1 1.2 1 .8 1.7-.4.6-1.3.6-1.7 0-.5-.8.1-1.8.9-1.7zm8 0c.8 0 1.3.9.9 1.6-.4.7-1.4.7-1.8 0-.4-.7.1-1.6.9-1.6z" opacity=".55"/>
  </g>
</svg>`;

export const walnutIcon = new LabIcon({ name: 'jupyter-walnut:walnut', svgstr: svg });
