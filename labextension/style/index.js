import './base.css';
import './analytics.css';
