// The troubleshooter agent's page (web_page.py): "Diagnose" posts to this origin's
// /diagnose, so behind the router the fetch is routed like the page itself (a preview cookie
// included), and shows the answer with the router's route decision.
"use strict";

const form = document.getElementById("diagnose");
const status = document.getElementById("status");

function show(id, text) {
  document.getElementById(id).textContent = text ?? "—";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const namespace = new FormData(form).get("namespace");
  status.textContent = "Diagnosing…";
  let response;
  let answer;
  try {
    response = await fetch("/diagnose", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ namespace }),
    });
    answer = await response.json();
  } catch (error) {
    status.textContent = `The agent gave no answer: ${error}`;
    return;
  }
  status.textContent = `HTTP ${response.status}: ${answer.ok ? "diagnosed" : "failed"}`;
  show("answer-build", `prompt ${answer.promptVersion}, model ${answer.modelVersion}, in ${answer.sandbox}`);
  // Set by the router (absent when the agent is called directly).
  show("answer-route", response.headers.get("sandboxd-route"));
  show("answer-pod", answer.pod);
  show("answer-diagnosis", answer.diagnosis);
  show("answer-error", answer.error);
  show("answer-trace", answer.traceId);
  document.getElementById("answer").hidden = false;
});
