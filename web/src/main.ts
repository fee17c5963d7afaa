import "./style.css";
import { setToken, token } from "./api";
import { connect, onState, readsNeedToken, reconnectNow } from "./live";
import { comparePage } from "./pages/compare";
import { experimentPage } from "./pages/experiment";
import { experimentsPage } from "./pages/experiments";
import { trajectoriesPage } from "./pages/trajectories";
import { workersPage } from "./pages/workers";
import { refresh, route, start } from "./router";

route(/^\/$/, experimentsPage);
route(/^\/experiments\/[0-9a-f-]{36}$/, experimentPage);
route(/^\/compare$/, comparePage);
route(/^\/trajectories$/, trajectoriesPage);
route(/^\/workers$/, workersPage);

const indicator = document.getElementById("live")!;
onState((s) => {
  indicator.textContent = s === "live" ? "● live" : s === "connecting" ? "○ connecting" : "○ reconnecting";
  indicator.className = `live-${s}`;
});

// The API token, kept in this browser only, for submitting and cancelling, and for reading where
// the server protects reads: there, a new token shows the page again and reconnects the live
// stream (elsewhere the page is left as it is, with whatever the user typed).
const dialog = document.getElementById("token-dialog") as HTMLDialogElement;
const input = document.getElementById("token-input") as HTMLInputElement;
document.getElementById("token-button")!.addEventListener("click", () => {
  input.value = token();
  dialog.showModal();
});
dialog.addEventListener("close", () => {
  if (dialog.returnValue !== "save") return;
  setToken(input.value.trim());
  if (readsNeedToken()) {
    refresh();
    reconnectNow();
  }
});

start(document.getElementById("app")!);
void connect();
