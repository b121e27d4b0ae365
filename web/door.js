// The door scanner (API.md §12): the camera through the browser's BarcodeDetector when there is
// one, a typed or pasted code otherwise; POST /v1/checkins with the door key, kept in this
// tab's sessionStorage only; a big green or red answer.

const $ = (id) => document.getElementById(id);
const KEY = "boxoffice-door-key";
const GATE = "boxoffice-door-gate";

const REFUSED = {
  already_checked_in: "Already checked in",
  invalid_ticket: "Invalid ticket",
  ticket_void: "Ticket void",
  forbidden: "Wrong door key",
};

function startScanning() {
  $("door-key-box").hidden = true;
  $("scan-box").hidden = false;
  $("code").focus();
  if ("BarcodeDetector" in window) $("camera-start").hidden = false;
}

function verdict(ok, title, detail) {
  const box = $("verdict");
  box.hidden = false;
  box.className = `verdict ${ok ? "ok" : "no"}`;
  $("verdict-title").textContent = title;
  $("verdict-detail").textContent = detail;
}

async function checkIn(code) {
  let resp;
  try {
    resp = await fetch("/v1/checkins", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Door-Key": sessionStorage.getItem(KEY) || "" },
      body: JSON.stringify({ code, gate: sessionStorage.getItem(GATE) || "gate-1" }),
      cache: "no-store",
    });
  } catch (e) {
    verdict(false, "No connection", "The service cannot be reached. Try again.");
    return;
  }
  const data = await resp.json().catch(() => ({}));
  if (resp.ok) {
    const seat = data.row ? `Row ${data.row}, seat ${data.seatNumber}` : `Seat ${data.seatNumber}`;
    verdict(true, "Welcome in", `${seat} (ticket ${data.ticketId})`);
  } else {
    const title = REFUSED[data.error] || "Not admitted";
    const detail = data.error === "already_checked_in"
      ? `First scanned at ${data.checkedInAt}, gate ${data.gate}`
      : (data.message || "");
    verdict(false, title, detail);
  }
}

async function useCamera() {
  const video = $("camera");
  const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
  const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  let last = "";
  const tick = async () => {
    try {
      const found = await detector.detect(video);
      const code = found.length ? found[0].rawValue : "";
      if (code && code !== last) {
        last = code;
        await checkIn(code);
      }
    } catch (e) {
      // A frame the detector could not read: try the next one.
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("door-key").value);
    sessionStorage.setItem(GATE, $("gate").value.trim() || "gate-1");
    startScanning();
  });
  $("code-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const code = $("code").value.trim();
    if (!code) return;
    await checkIn(code);
    $("code").select();
  });
  $("camera-start").addEventListener("click", () => {
    useCamera().catch(() => verdict(false, "No camera", "Type or paste the code instead."));
  });
  $("change-key").addEventListener("click", () => {
    $("scan-box").hidden = true;
    $("door-key-box").hidden = false;
    $("door-key").focus();
  });
  if (sessionStorage.getItem(KEY)) startScanning();
});
