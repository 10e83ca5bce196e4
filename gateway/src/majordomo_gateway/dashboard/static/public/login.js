// The login form: POST /api/v1/admin/login sets the session cookie; the page then reloads into
// the dashboard (the server decides which page a request gets).
"use strict";
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const message = document.getElementById("login-message");
  message.textContent = "";
  form.querySelector("button").disabled = true;
  try {
    const response = await fetch("/api/v1/admin/login", {
      method: "POST", credentials: "same-origin",
      headers: {"content-type": "application/json"},
      body: JSON.stringify({email: form.email.value, password: form.password.value}),
    });
    if (response.ok) {
      location.reload();
      return;
    }
    let text = `login failed (${response.status})`;
    try { text = (await response.json()).error.message || text; } catch (_) { /* not JSON */ }
    message.textContent = text;
  } catch (error) {
    message.textContent = `the gateway did not answer: ${error}`;
  } finally {
    form.querySelector("button").disabled = false;
  }
});
