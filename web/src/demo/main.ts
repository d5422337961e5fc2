import './style.css';
import { DemoApp, findUi } from './app';
import { EchoPanel, findEchoUi } from './echo';
import { installHooks } from './hooks';
import { readParams } from './params';

const params = readParams();
const ui = findUi();
const app = new DemoApp(ui, params);
const echo = new EchoPanel(findEchoUi(), app, params);
installHooks(app, echo);
linkEchoPage();

// Closing the socket right away lets the others see us leave now, not at the end of the resume grace.
window.addEventListener('pagehide', () => {
  void echo.cleanup();
  app.shutdown();
});

// Connected from the start, so that calls ring on this tab before it joins any room.
app.connect().catch((err: unknown) => console.warn('mikoto-rtc demo: not connected', err));

if (params.echo) {
  // The "Test my camera, mic and network" page: the test instead of the room forms.
  ui.form.hidden = true;
  ui.callForm.hidden = true;
  echo.show();
  void echo.start();
} else if (params.autojoin && params.room) {
  void app.join();
}

/** The echo page's link keeps what says where and who we are (not the room: the test gets its own). */
function linkEchoPage(): void {
  const link = document.getElementById('echo-link');
  if (!(link instanceof HTMLAnchorElement)) return;
  const here = new URLSearchParams(window.location.search);
  const query = new URLSearchParams({ echo: '1' });
  for (const key of ['server', 'token', 'user', 'relay', 'audio', 'video', 'media', 'width', 'height', 'fps']) {
    const value = here.get(key);
    if (value !== null) query.set(key, value);
  }
  link.href = `?${query.toString()}`;
  // The form's "Relay only" box counts too: the test then checks the TURN path.
  const relay = document.getElementById('relay-input');
  link.addEventListener('click', () => {
    if (relay instanceof HTMLInputElement) query.set('relay', relay.checked ? '1' : '0');
    link.href = `?${query.toString()}`;
  });
}
