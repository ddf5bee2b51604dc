// Passkeys on the pages (SPEC section 14): the only script of portcullis.
// It turns the server's WebAuthn options (binary fields as base64url) into
// what navigator.credentials expects, and the authenticator's answer back.
//   #add-passkey      /ui/account/passkeys: adds one through the JSON API
//                     (the session cookie, from this origin);
//   #passkey-sign-in  /ui/login: signs in without an email;
//   #use-passkey      /ui/login/mfa: the second step after a password.
// Signing in posts the answer with the page's own form, so the server sets
// the session cookie and sends the browser on, as with a password.
(function () {
  "use strict";

  function toBytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    var binary = atob(b64 + "===".slice((b64.length + 3) % 4));
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // JSON nulls are absent members to WebAuthn.
  function withoutNulls(value) {
    if (Array.isArray(value)) return value.map(withoutNulls);
    if (value && typeof value === "object") {
      var out = {};
      Object.keys(value).forEach(function (k) {
        if (value[k] !== null) out[k] = withoutNulls(value[k]);
      });
      return out;
    }
    return value;
  }

  function creationOptions(publicKey) {
    var o = withoutNulls(publicKey);
    o.challenge = toBytes(o.challenge);
    o.user.id = toBytes(o.user.id);
    (o.excludeCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    return o;
  }

  function requestOptions(publicKey) {
    var o = withoutNulls(publicKey);
    o.challenge = toBytes(o.challenge);
    (o.allowCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    return o;
  }

  function created(credential) {
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: toText(credential.response.attestationObject),
        clientDataJSON: toText(credential.response.clientDataJSON)
      },
      extensions: {}
    };
  }

  function asserted(credential) {
    var r = credential.response;
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: toText(r.authenticatorData),
        clientDataJSON: toText(r.clientDataJSON),
        signature: toText(r.signature),
        userHandle: r.userHandle ? toText(r.userHandle) : null
      },
      extensions: {}
    };
  }

  var alert = document.getElementById("passkey-error");

  function say(message) {
    if (!alert) return;
    alert.textContent = message;
    alert.hidden = false;
    alert.focus();
  }

  function failed(error) {
    if (error && error.name === "NotAllowedError") {
      say("The passkey was not used: the request was cancelled or timed out. Try again.");
    } else if (error && error.name === "InvalidStateError") {
      say("This passkey is already registered.");
    } else {
      say((error && error.message) || "The passkey did not work. Try again.");
    }
  }

  function postJson(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body)
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (json) {
        if (!res.ok) throw new Error(json.message || "The server said no (" + res.status + ").");
        return json;
      });
    });
  }

  // The answer goes with the page's form: its token, `rd` and the rest.
  function submitAssertion(form, challengeId, credential) {
    form.elements.challenge_id.value = challengeId;
    form.elements.credential.value = JSON.stringify(asserted(credential));
    form.submit();
  }

  function ready(button) {
    if (!button) return false;
    if (!window.PublicKeyCredential || !navigator.credentials) {
      say("This browser cannot use passkeys.");
      return false;
    }
    button.hidden = false;
    return true;
  }

  var add = document.getElementById("add-passkey");
  if (ready(add)) {
    add.addEventListener("click", function () {
      var name = document.getElementById("passkey-name");
      add.disabled = true;
      postJson("/auth/passkeys/register/start", {})
        .then(function (begun) {
          return navigator.credentials
            .create({ publicKey: creationOptions(begun.publicKey) })
            .then(function (credential) {
              return postJson("/auth/passkeys/register/finish", {
                challenge_id: begun.challenge_id,
                credential: created(credential),
                name: name ? name.value : ""
              });
            });
        })
        .then(function () { window.location.assign("/ui/account/passkeys?done=added"); })
        .catch(failed)
        .then(function () { add.disabled = false; });
    });
  }

  var signIn = document.getElementById("passkey-sign-in");
  if (ready(signIn)) {
    signIn.addEventListener("click", function () {
      var form = document.getElementById("passkey-form");
      var remember = document.querySelector("input[name=remember_me]");
      form.elements.remember_me.value = remember && remember.checked ? "true" : "";
      signIn.disabled = true;
      postJson("/auth/passkeys/login/start", {})
        .then(function (begun) {
          return navigator.credentials
            .get({ publicKey: requestOptions(begun.publicKey) })
            .then(function (credential) { submitAssertion(form, begun.challenge_id, credential); });
        })
        .catch(function (e) { signIn.disabled = false; failed(e); });
    });
  }

  var second = document.getElementById("use-passkey");
  if (ready(second)) {
    second.addEventListener("click", function () {
      var form = document.getElementById("passkey-form");
      second.disabled = true;
      navigator.credentials
        .get({ publicKey: requestOptions(JSON.parse(form.dataset.options)) })
        .then(function (credential) {
          submitAssertion(form, form.dataset.challengeId, credential);
        })
        .catch(function (e) { second.disabled = false; failed(e); });
    });
  }
})();
