import './style.css';
import { DemoApp, findUi } from './app';
import { installHooks } from './hooks';
import { readParams } from './params';

const params = readParams();
const app = new DemoApp(findUi(), params);
installHooks(app);

// Closing the socket right away lets the others see us leave now, not at the end of the resume grace.
window.addEventListener('pagehide', () => app.shutdown());

// Connected from the start, so that calls ring on this tab before it joins any room.
app.connect().catch((err: unknown) => console.warn('mikoto-rtc demo: not connected', err));

if (params.autojoin && params.room) void app.join();
