import { ISession } from '../logic/types';

/** What the sidebar asks of the app: open or switch notebooks onto a session's kernel. */
export interface IPanelActions {
  openNotebook(session: ISession): void;
  useInCurrentNotebook?: (session: ISession) => void;
  canUseInCurrentNotebook(): boolean;
  /** The current notebook's path under the server root, if one is open. */
  currentNotebookPath?: () => string | null;
  /** Show the session's workspace in a file browser (issue #16). */
  openFiles?: (session: ISession) => void;
  /** A terminal in the session, in the main area (issue #16). */
  openTerminal?: (session: ISession) => void;
  /** Open a web app the session serves on a port, in a new tab (issue #16). */
  openPort?: (session: ISession) => void;
  /** Ask for a top-up of the session (the card's top-up form). */
  topUp?: (session: ISession) => void;
}
