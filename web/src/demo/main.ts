import './style.css';
import { DemoApp, findUi } from './app';
import { installHooks } from './hooks';
import { readParams } from './params';

const params = readParams();
const app = new DemoApp(findUi(), params);
installHooks(app);

// Closing the socket right away lets the others see us leave now, not at a ping timeout.
window.addEventListener('pagehide', () => void app.teardown());

if (params.autojoin && params.room) void app.join();
