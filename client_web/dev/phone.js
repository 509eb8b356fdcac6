// The demo's phone page (/dev/phone): relabel each UTC <time> the server rendered in the
// reader's time zone, the way a phone's messages app does ("Today 1:05 PM",
// "Yesterday 9:12 AM", "Mon 4:30 PM", "Dec 3, 1:05 PM"), "today" being the server's
// (data-now: the node's clock); then show each thread at its newest text.

const DAY = 86400000;

function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

function phoneTime(moment, now) {
  const time = moment.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  const days = Math.round((startOfDay(now) - startOfDay(moment)) / DAY);
  if (days <= 0) return `Today ${time}`;
  if (days === 1) return `Yesterday ${time}`;
  if (days < 7) return `${moment.toLocaleDateString([], { weekday: "short" })} ${time}`;
  const date = moment.toLocaleDateString([], {
    month: "short", day: "numeric",
    year: moment.getFullYear() === now.getFullYear() ? undefined : "numeric",
  });
  return `${date}, ${time}`;
}

const phones = document.querySelector(".phones");
const now = new Date(phones?.dataset.now || Date.now());
for (const element of document.querySelectorAll("time[datetime]")) {
  const moment = new Date(element.dateTime);
  if (!Number.isNaN(moment.getTime())) element.textContent = phoneTime(moment, now);
}
for (const list of document.querySelectorAll(".bubbles")) {
  list.scrollTop = list.scrollHeight;
}
