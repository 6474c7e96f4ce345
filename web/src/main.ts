/**
 * Placeholder entry of the browser client, so that the build, the serving and the browser tests have
 * something to load; the app itself replaces this file.
 */
import "./styles.css";

const heading = document.createElement("h1");
heading.textContent = "eth-chat";
document.body.append(heading);
