// The publish form: POST /publish with JSON, then show the id the server
// returned or the error it gave.

/**
 * @param {HTMLFormElement} form
 * @param {HTMLElement} result where the outcome is written (an aria-live region)
 * @param {{beforePublish: (topic: string, type: string) => string, token: () => string}} hooks
 *   `beforePublish` runs before sending (so the page listens for a new event
 *   type before its event can arrive) and returns a note to show with the id;
 *   `token` gives the access token to send as `Authorization: Bearer`.
 */
export function setUpPublishForm(form, result, hooks) {
  const field = (name) => form.elements.namedItem(name);

  form.addEventListener('submit', async (submit) => {
    submit.preventDefault();
    const topic = field('topic').value;
    const event = field('event').value;
    const data = field('data').value;
    const token = hooks.token().trim();
    const note = hooks.beforePublish(topic, event);

    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    show(result, 'pending', 'Publishing…');
    try {
      const response = await fetch('publish', {
        method: 'POST',
        headers,
        body: JSON.stringify({ topic, event, data }),
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok && typeof body.id === 'string') {
        show(result, 'ok', `Published, id ${body.id}${note ? ` ${note}` : ''}`);
        result.dataset.id = body.id;
      } else {
        show(result, 'error', `Error ${response.status}: ${body.error ?? response.statusText}`);
      }
    } catch (error) {
      show(result, 'error', `Could not reach the server: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  });

  // Ctrl+Enter (Cmd+Enter on a Mac) sends from the data field, as in chat apps.
  field('data').addEventListener('keydown', (key) => {
    if (key.key === 'Enter' && (key.ctrlKey || key.metaKey)) {
      key.preventDefault();
      form.requestSubmit();
    }
  });
}

function show(result, kind, text) {
  result.dataset.kind = kind;
  delete result.dataset.id;
  result.textContent = text;
}
